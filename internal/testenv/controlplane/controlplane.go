// Package controlplane starts a real etcd and a real kube-apiserver on
// loopback ports for fleetagent's integration tests and benchmarks.
//
// The binaries come from the pinned tools module (`make controlplane` builds
// them into bin/). Every claim fleetagent makes about apiserver load is
// measured against this control plane, so it runs with the features that
// shape that load switched on as in production: RBAC authorization, API
// Priority and Fairness, the watch cache, protobuf storage. There is no
// controller-manager, so the ServiceAccount admission plugin is disabled
// (Options.ServiceAccountAdmission turns it on for a harness that adds one,
// internal/testenv/realnode) and nothing garbage-collects or schedules: tests
// create what they need.
//
// Users authenticate with static bearer tokens. The admin is in
// system:masters; every other user named in Options.Users is put in
// system:serviceaccounts and system:authenticated, so the bootstrap
// FlowSchemas classify it as they would a real agent's service account.
package controlplane

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fleetagent/fleetagent/internal/testenv/proc"
)

// Options configures a control plane. The zero value starts one with only
// the admin user and no audit log.
type Options struct {
	// Users are the non-admin users to create, each with its own token.
	Users []string
	// Audit turns on the audit log: one JSON line per request stage with
	// the user, verb and full request URI. Read it with AuditEvents.
	Audit bool
	// BinDir holds etcd and kube-apiserver. Empty means $FLEETAGENT_BIN_DIR,
	// then bin/ at the root of the fleetagent module.
	BinDir string
	// APIServerFlags are appended to the kube-apiserver command line and
	// override the defaults (a later flag wins).
	APIServerFlags []string
	// StartTimeout bounds each start and restart. Zero means 2 minutes.
	StartTimeout time.Duration
	// LogWriter, if set, also receives the apiserver's and etcd's logs.
	LogWriter io.Writer
	// ServiceAccountAdmission turns the ServiceAccount admission plugin on,
	// so pods get projected service-account tokens. Only with a
	// kube-controller-manager (given SAKeyPath and CACertPath) do they also
	// get kube-root-ca.crt and default service accounts.
	ServiceAccountAdmission bool
	// APIServerPort is the apiserver's secure port; zero picks a free one.
	// A fixed port is for manifests that must name it (a real node's
	// pods reach the apiserver at 127.0.0.1:<port>).
	APIServerPort int
}

// AdminUser is the name of the system:masters user every control plane has.
const AdminUser = "fleetagent-admin"

// ControlPlane is a running etcd and kube-apiserver. Its methods are safe
// for concurrent use, except Stop/Restart methods with each other.
type ControlPlane struct {
	opts    Options
	dir     string
	binDir  string
	tokens  map[string]string
	caData  []byte
	apiPort int
	url     string

	etcdClientURL string
	etcdArgs      []string
	apiArgs       []string

	mu   sync.Mutex
	etcd *proc.Proc
	api  *proc.Proc
}

// Start starts etcd and kube-apiserver in a new temporary directory and
// waits until the apiserver's /readyz passes. On failure it returns an error
// that carries the tail of the failing process's log, and leaves nothing
// running.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	// Ports are picked free and then released for the child to bind, so a
	// parallel test package can take one in between: start again on new
	// ports when that happens.
	for attempt := 1; ; attempt++ {
		cp, err := start(ctx, opts, binDir)
		if err == nil {
			return cp, nil
		}
		if attempt == 5 || opts.APIServerPort != 0 || !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			return nil, err
		}
	}
}

func start(ctx context.Context, opts Options, binDir string) (_ *ControlPlane, err error) {
	dir, err := os.MkdirTemp("", "fleetagent-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("controlplane: create temp dir: %w", err)
	}
	cp := &ControlPlane{opts: opts, dir: dir, binDir: binDir, tokens: map[string]string{}}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	if err := cp.writeConfig(); err != nil {
		return nil, err
	}
	if err := cp.StartEtcd(ctx); err != nil {
		return nil, err
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	return cp, nil
}

func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("FLEETAGENT_BIN_DIR")
	}
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin")
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("controlplane: %s not found in %s: run `make controlplane` at the repository root (or set FLEETAGENT_BIN_DIR)", b, dir)
		}
	}
	return dir, nil
}

// moduleRoot walks up from the working directory to the fleetagent go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/fleetagent/fleetagent\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("controlplane: no fleetagent go.mod above %s: set FLEETAGENT_BIN_DIR to the directory holding etcd and kube-apiserver", wd)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

func (cp *ControlPlane) writeConfig() error {
	var tokens strings.Builder
	cp.tokens[AdminUser] = newToken()
	fmt.Fprintf(&tokens, "%s,%s,%s,\"system:masters,system:authenticated\"\n", cp.tokens[AdminUser], AdminUser, AdminUser)
	for _, u := range cp.opts.Users {
		if _, dup := cp.tokens[u]; dup || u == "" || strings.ContainsAny(u, ",\"\n") {
			return fmt.Errorf("controlplane: user name %q is empty, duplicated or contains a comma, quote or newline", u)
		}
		cp.tokens[u] = newToken()
		fmt.Fprintf(&tokens, "%s,%s,%s,\"system:serviceaccounts,system:authenticated\"\n", cp.tokens[u], u, u)
	}
	if err := os.WriteFile(filepath.Join(cp.dir, "tokens.csv"), []byte(tokens.String()), 0o600); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	saKey := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(cp.dir, "sa.key"), saKey, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cp.dir, "audit-policy.yaml"), []byte(auditPolicy), 0o600); err != nil {
		return err
	}

	etcdPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	if cp.apiPort = cp.opts.APIServerPort; cp.apiPort == 0 {
		if cp.apiPort, err = freePort(); err != nil {
			return err
		}
	}
	cp.url = fmt.Sprintf("https://127.0.0.1:%d", cp.apiPort)
	cp.etcdClientURL = fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	cp.etcdArgs = []string{
		"--name=default",
		"--data-dir=" + filepath.Join(cp.dir, "etcd"),
		"--listen-client-urls=" + cp.etcdClientURL,
		"--advertise-client-urls=" + cp.etcdClientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		// A test control plane loses nothing that matters on a crash; fsync
		// only makes it slower on a shared 2-core machine.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}
	cp.apiArgs = []string{
		"--etcd-servers=" + cp.etcdClientURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", cp.apiPort),
		"--cert-dir=" + filepath.Join(cp.dir, "certs"),
		"--token-auth-file=" + filepath.Join(cp.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--enable-priority-and-fairness=true",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(cp.dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(cp.dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/16",
		// The loopback advertise address cannot back a kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"-v=1",
	}
	if !cp.opts.ServiceAccountAdmission {
		// No controller-manager creates service accounts for namespaces.
		cp.apiArgs = append(cp.apiArgs, "--disable-admission-plugins=ServiceAccount")
	}
	if cp.opts.Audit {
		cp.apiArgs = append(cp.apiArgs,
			"--audit-policy-file="+filepath.Join(cp.dir, "audit-policy.yaml"),
			"--audit-log-path="+cp.AuditLogPath(),
			"--audit-log-format=json",
			"--audit-log-mode=blocking",
			"--audit-log-maxsize=0",
		)
	}
	cp.apiArgs = append(cp.apiArgs, cp.opts.APIServerFlags...)
	return nil
}

// SAKeyPath is the service-account signing key (a controller-manager's
// --service-account-private-key-file).
func (cp *ControlPlane) SAKeyPath() string { return filepath.Join(cp.dir, "sa.key") }

// CACertPath is the apiserver's self-signed serving certificate, the CA
// clients verify it with (a controller-manager's --root-ca-file).
func (cp *ControlPlane) CACertPath() string { return filepath.Join(cp.dir, "certs", "apiserver.crt") }

// Port is the apiserver's secure port on 127.0.0.1.
func (cp *ControlPlane) Port() int { return cp.apiPort }

// Dir is the control plane's temporary directory (logs, etcd data, certs).
func (cp *ControlPlane) Dir() string { return cp.dir }

// URL is the apiserver's https URL.
func (cp *ControlPlane) URL() string { return cp.url }

// EtcdURL is etcd's client URL.
func (cp *ControlPlane) EtcdURL() string { return cp.etcdClientURL }

// AuditLogPath is where the audit log is written when Options.Audit is set.
func (cp *ControlPlane) AuditLogPath() string { return filepath.Join(cp.dir, "audit.log") }

// Users are the non-admin users this control plane authenticates.
func (cp *ControlPlane) Users() []string { return append([]string(nil), cp.opts.Users...) }

// AdminConfig is a rest.Config for the system:masters user.
func (cp *ControlPlane) AdminConfig() *rest.Config { return cp.UserConfig(AdminUser) }

// UserConfig is a rest.Config that authenticates as user. It panics for a
// user not in Options.Users, which is a bug in the calling test. Client-side
// rate limiting is left at client-go's defaults; callers that measure load
// set their own.
func (cp *ControlPlane) UserConfig(user string) *rest.Config {
	tok, ok := cp.tokens[user]
	if !ok {
		panic(fmt.Sprintf("controlplane: unknown user %q", user))
	}
	return &rest.Config{
		Host:            cp.url,
		BearerToken:     tok,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.caData},
		UserAgent:       "fleetagent-test/" + user,
	}
}

// StartEtcd starts etcd (again, after StopEtcd) with the same data.
func (cp *ControlPlane) StartEtcd(ctx context.Context) error {
	p, err := cp.startProcess("etcd", cp.etcdArgs)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.etcd = p
	cp.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	err = waitFor(ctx, p, func() error {
		resp, err := http.Get(cp.etcdClientURL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("controlplane: etcd did not become healthy: %w\n--- etcd log tail ---\n%s", err, p.Tail(40))
	}
	// The port was free when picked; a parallel test package's etcd can
	// take it in between and answer /health while this one fails to bind
	// ("address already in use", which Start retries) and exits.
	select {
	case <-p.Done():
		return fmt.Errorf("controlplane: etcd exited after %s/health answered: another process serves that port\n--- etcd log tail ---\n%s", cp.etcdClientURL, p.Tail(40))
	case <-time.After(500 * time.Millisecond):
	}
	return nil
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) on the
// same port and waits for /readyz.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	p, err := cp.startProcess("kube-apiserver", cp.apiArgs)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.api = p
	cp.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	certFile := filepath.Join(cp.dir, "certs", "apiserver.crt")
	err = waitFor(ctx, p, func() error {
		if cp.caData == nil {
			b, err := os.ReadFile(certFile)
			if err != nil {
				return err
			}
			cp.caData = b
		}
		return cp.readyz(ctx)
	})
	if err != nil {
		return fmt.Errorf("controlplane: kube-apiserver did not become ready: %w\n--- kube-apiserver log tail ---\n%s", err, p.Tail(40))
	}
	return nil
}

func (cp *ControlPlane) readyz(ctx context.Context) error {
	// One attempt must not hang on a connection the apiserver accepted
	// but does not answer yet and so use up the whole start timeout.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	client, err := rest.HTTPClientFor(cp.AdminConfig())
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.url+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", resp.Status, proc.LastLines(string(body), 5))
	}
	return nil
}

// StopAPIServer stops kube-apiserver gracefully (SIGTERM, then SIGKILL after
// 30s) and waits for it to exit. Open watches see their connections end.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	p := cp.api
	cp.api = nil
	cp.mu.Unlock()
	return stop(p)
}

// KillAPIServer kills kube-apiserver with SIGKILL, as a crash would.
func (cp *ControlPlane) KillAPIServer() error {
	cp.mu.Lock()
	p := cp.api
	cp.api = nil
	cp.mu.Unlock()
	return kill(p)
}

// StopEtcd stops etcd and waits for it to exit.
func (cp *ControlPlane) StopEtcd() error {
	cp.mu.Lock()
	p := cp.etcd
	cp.etcd = nil
	cp.mu.Unlock()
	return stop(p)
}

// RestartAPIServer stops and starts kube-apiserver in place.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context) error {
	if err := cp.StopAPIServer(); err != nil {
		return err
	}
	return cp.StartAPIServer(ctx)
}

// Stop stops both processes and removes the temporary directory, unless
// FLEETAGENT_KEEP_CONTROLPLANE is set. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	errs := []error{cp.StopAPIServer(), cp.StopEtcd()}
	if os.Getenv("FLEETAGENT_KEEP_CONTROLPLANE") == "" {
		errs = append(errs, os.RemoveAll(cp.dir))
	}
	return errors.Join(errs...)
}

// APIServerLogTail returns the last lines of the apiserver's log.
func (cp *ControlPlane) APIServerLogTail() string {
	cp.mu.Lock()
	p := cp.api
	cp.mu.Unlock()
	if p == nil {
		return ""
	}
	return p.Tail(40)
}

// APIServerPID is the apiserver's process id, or 0 when it is stopped.
func (cp *ControlPlane) APIServerPID() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.api == nil {
		return 0
	}
	return cp.api.Cmd.Process.Pid
}

func (cp *ControlPlane) startProcess(name string, args []string) (*proc.Proc, error) {
	p, err := proc.Start(proc.Spec{
		Name:    name,
		Path:    filepath.Join(cp.binDir, name),
		Args:    args,
		LogPath: filepath.Join(cp.dir, name+".log"),
		Also:    cp.opts.LogWriter,
		Banner:  true,
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return p, nil
}

// stop stops p gracefully (SIGTERM, then SIGKILL after 30s); nil is a no-op.
func stop(p *proc.Proc) error {
	p.Stop(30 * time.Second)
	return nil
}

// kill kills p as a crash would; nil is a no-op.
func kill(p *proc.Proc) error {
	p.Kill()
	return nil
}

// waitFor polls check until it passes, the process exits, or ctx ends.
func waitFor(ctx context.Context, p *proc.Proc, check func() error) error {
	return proc.WaitFor(ctx, p, 100*time.Millisecond, check)
}

// ModuleRoot is the fleetagent module's root directory, found from the
// working directory (a test runs in its package's directory). It panics
// outside the module: a test there cannot find its fixtures either.
func ModuleRoot() string {
	d, err := moduleRoot()
	if err != nil {
		panic(err)
	}
	return d
}

// Kubeconfig writes a kubeconfig file for user (a name from Options.Users,
// or "admin") against this control plane into a directory of t's, as a
// process under test reads it with --kubeconfig, and returns its path.
func (cp *ControlPlane) Kubeconfig(t testing.TB, user string) string {
	t.Helper()
	rc := cp.UserConfig(user)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: user}
	cfg.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
