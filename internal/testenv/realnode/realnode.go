// Package realnode starts a real single-node Kubernetes cluster on loopback
// for fleetagent's end-to-end test (make e2e): etcd and kube-apiserver (the
// controlplane harness, with ServiceAccount admission and the audit log on),
// kube-controller-manager, kube-scheduler, containerd with runc, and a
// kubelet with webhook authentication and authorization, serving on
// 127.0.0.1:10250 with a self-signed certificate.
//
// It needs root, the binaries `make node` builds into bin/, cgroups and
// overlayfs. The kubelet's ports (10250, 10248) and some host paths are per
// machine, so only one node runs at a time: a second Start fails at once,
// saying so (an flock on LockPath). Stop tears down by process ID and leaves
// no process, mount, kubepods cgroup or host directory behind; Start also
// sweeps what a killed earlier run left.
//
// Pods have no network of their own (only the CNI loopback plugin is
// configured): run them with hostNetwork. The node reports its non-loopback
// address as InternalIP and the kubernetes Service has a ClusterIP with no
// proxy: nothing should connect to either (../../shared/realnode.md).
package realnode

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/proc"
)

const (
	// LockPath is held (flock) while a node runs on this machine.
	LockPath = "/run/fleetagent-realnode.lock"
	// KubeletPort and KubeletHealthzPort are fixed: what the manifests name.
	KubeletPort        = 10250
	KubeletHealthzPort = 10248
	// NodeName is the node's name (kubelet --hostname-override).
	NodeName = "fleetagent-e2e"
	// PauseImage is the sandbox image's name; Options.Images must provide it.
	PauseImage = "fleetagent.local/pause:e2e"
)

// hostDirs are written by the kubelet or containerd outside the node's
// temporary directory; Stop removes those that did not exist before Start.
var hostDirs = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd"}

// Options configures a node.
type Options struct {
	// BinDir holds every binary; empty: $FLEETAGENT_BIN_DIR, then bin/.
	BinDir string
	// APIServerPort is the apiserver's fixed port on 127.0.0.1 (pods are
	// told it). Zero means 16443.
	APIServerPort int
	// Images are OCI or docker archives imported into containerd's k8s.io
	// namespace before the kubelet starts; one must be PauseImage.
	Images []string
	// LogWriter, if set, receives a line per start/stop step.
	LogWriter io.Writer
}

// Node is a running single-node cluster.
type Node struct {
	CP *controlplane.ControlPlane

	opts      Options
	binDir    string
	dir       string
	lock      *os.File
	kubeletCA []byte
	preexist  map[string]bool

	mu    sync.Mutex
	procs []*proc.Proc // in start order
}

// Start starts the node and waits until it is Ready and untainted.
// On failure it tears down whatever it started.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("realnode: needs root (kubelet, containerd and runc manage cgroups and mounts): run as root, e.g. in CI")
	}
	if opts.APIServerPort == 0 {
		opts.APIServerPort = 16443
	}
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	lock, err := acquireLock()
	if err != nil {
		return nil, err
	}
	n := &Node{opts: opts, binDir: binDir, lock: lock, preexist: map[string]bool{}}
	defer func() {
		if err != nil {
			if serr := n.Stop(); serr != nil {
				err = fmt.Errorf("%w\n(teardown: %v)", err, serr)
			}
		}
	}()
	// A killed earlier run (SIGKILL, a test timeout) may have left shims,
	// mounts and cgroups: sweep them while holding the lock.
	if err := sweep(binDir, ""); err != nil {
		return nil, fmt.Errorf("realnode: clean up an earlier run: %w", err)
	}
	for _, d := range hostDirs {
		_, serr := os.Stat(d)
		n.preexist[d] = serr == nil
	}
	for _, p := range []int{KubeletPort, KubeletHealthzPort, opts.APIServerPort} {
		l, lerr := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if lerr != nil {
			return nil, fmt.Errorf("realnode: port %d on 127.0.0.1 is taken (%v): a real node needs it; stop what listens there", p, lerr)
		}
		l.Close()
	}
	if n.dir, err = os.MkdirTemp("", "fleetagent-realnode-"); err != nil {
		return nil, err
	}
	t0 := time.Now()
	n.logf("starting etcd and kube-apiserver on 127.0.0.1:%d", opts.APIServerPort)
	n.CP, err = controlplane.Start(ctx, controlplane.Options{
		BinDir:                  binDir,
		Audit:                   true,
		ServiceAccountAdmission: true,
		APIServerPort:           opts.APIServerPort,
	})
	if err != nil {
		return nil, err
	}
	n.logf("apiserver ready after %s", time.Since(t0).Round(100*time.Millisecond))
	if err := n.writeFiles(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range opts.Images {
		if err := n.Import(ctx, img); err != nil {
			return nil, err
		}
	}
	kc := filepath.Join(n.dir, "admin.kubeconfig")
	if _, err := n.start("kube-controller-manager", nil,
		"--kubeconfig="+kc, "--controllers=*", "--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file="+n.CP.SAKeyPath(), "--root-ca-file="+n.CP.CACertPath(),
		"--use-service-account-credentials=false", "-v=1"); err != nil {
		return nil, err
	}
	if _, err := n.start("kube-scheduler", nil, "--kubeconfig="+kc, "--leader-elect=false", "--secure-port=0", "-v=1"); err != nil {
		return nil, err
	}
	kp, err := n.start("kubelet", nil,
		"--config="+filepath.Join(n.dir, "kubelet.yaml"), "--kubeconfig="+kc,
		"--hostname-override="+NodeName, "--root-dir="+filepath.Join(n.dir, "kubelet"),
		"--cert-dir="+filepath.Join(n.dir, "kubelet", "pki"), "-v=1")
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 2*time.Minute, kp, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", KubeletHealthzPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("realnode: kubelet not healthy: %w\n--- kubelet log tail ---\n%s", err, kp.Tail(40))
	}
	n.logf("kubelet healthy after %s", time.Since(t0).Round(100*time.Millisecond))
	cs, err := kubernetes.NewForConfig(n.CP.AdminConfig())
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 2*time.Minute, kp, func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
				return fmt.Errorf("node Ready=%s: %s", c.Status, c.Message)
			}
		}
		if len(node.Spec.Taints) > 0 {
			return fmt.Errorf("node still tainted: %v", node.Spec.Taints)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("realnode: node %s did not become Ready and untainted: %w\n--- kubelet log tail ---\n%s", NodeName, err, kp.Tail(40))
	}
	n.logf("node Ready and untainted after %s", time.Since(t0).Round(100*time.Millisecond))
	return n, nil
}

// Dir is the node's temporary directory (logs of every part, configs).
func (n *Node) Dir() string { return n.dir }

// KubeletCA is the kubelet's self-signed serving certificate (PEM); it names
// NodeName and 127.0.0.1.
func (n *Node) KubeletCA() []byte { return n.kubeletCA }

// KubeletURL is the kubelet's https endpoint on loopback.
func (n *Node) KubeletURL() string { return fmt.Sprintf("https://127.0.0.1:%d", KubeletPort) }

// LogTail is the end of one part's log ("kubelet", "containerd", ...).
func (n *Node) LogTail(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.procs {
		if p.Name == name {
			return p.Tail(40)
		}
	}
	return ""
}

// Import imports an image archive into containerd's k8s.io namespace.
func (n *Node) Import(ctx context.Context, archive string) error {
	out, err := exec.CommandContext(ctx, filepath.Join(n.binDir, "ctr"), "--address", n.sock(), "--namespace", "k8s.io",
		"images", "import", "--local", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("realnode: import %s into containerd: %v: %s", archive, err, out)
	}
	n.logf("imported %s", filepath.Base(archive))
	return nil
}

func (n *Node) sock() string { return filepath.Join(n.dir, "containerd", "containerd.sock") }

func (n *Node) logf(format string, args ...any) {
	if n.opts.LogWriter != nil {
		fmt.Fprintf(n.opts.LogWriter, "realnode: "+format+"\n", args...)
	}
}

func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("FLEETAGENT_BIN_DIR")
	}
	if dir == "" {
		dir = filepath.Join(controlplane.ModuleRoot(), "bin")
	}
	// Resolved, so that processes are recognised by /proc/PID/exe.
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
		"containerd", "containerd-shim-runc-v2", "ctr", "runc", "cni/loopback"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("realnode: %s not found in %s: run `make node` at the repository root (or set FLEETAGENT_BIN_DIR)", b, dir)
		}
	}
	return dir, nil
}

func acquireLock() (*os.File, error) {
	f, err := os.OpenFile(LockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("realnode: open lock %s: %w", LockPath, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(LockPath)
		f.Close()
		return nil, fmt.Errorf("realnode: another real node is running on this machine (%s is locked by pid %s): the kubelet's ports %d/%d and host paths allow one per machine; wait for it to finish or stop it",
			LockPath, strings.TrimSpace(string(holder)), KubeletPort, KubeletHealthzPort)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func (n *Node) writeFiles() error {
	cert, key, err := selfSigned(NodeName)
	if err != nil {
		return err
	}
	n.kubeletCA = cert
	d := n.dir
	cfg := n.CP.AdminConfig()
	files := map[string]string{
		"kubelet/pki/kubelet.crt": string(cert),
		"kubelet/pki/kubelet.key": string(key),
		"admin.kubeconfig": fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: %q, certificate-authority: %q}
users:
- name: admin
  user: {token: %q}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
`, cfg.Host, n.CP.CACertPath(), cfg.BearerToken),
		"cni/net.d/10-loopback.conflist": `{"cniVersion": "1.0.0", "name": "loopback", "plugins": [{"type": "loopback"}]}` + "\n",
		// restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, and
		// runc fails to lower a container's oom_score_adj without it.
		"containerd/config.toml": fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %[6]q
        Root = %[7]q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[8]q]
    conf_dir = %[9]q
`, filepath.Join(d, "containerd", "root"), filepath.Join(d, "containerd", "state"), n.sock(), n.sock()+".ttrpc",
			PauseImage, filepath.Join(n.binDir, "runc"), filepath.Join(d, "runc"), filepath.Join(n.binDir, "cni"), filepath.Join(d, "cni", "net.d")),
		// Authorization and authentication caches are short so that a
		// changed RBAC binding shows at the next scrape. Image GC never
		// runs: nothing here can pull an image again.
		"kubelet.yaml": fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%[1]s
address: 127.0.0.1
port: %[2]d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[3]d
tlsCertFile: %[4]s
tlsPrivateKeyFile: %[5]s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true, cacheTTL: 1s}
authorization:
  mode: Webhook
  webhook: {cacheAuthorizedTTL: 1s, cacheUnauthorizedTTL: 1s}
failSwapOn: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
staticPodPath: %[6]s
podLogsDir: %[7]s
maxPods: 20
syncFrequency: 10s
`, n.sock(), KubeletPort, KubeletHealthzPort, filepath.Join(d, "kubelet/pki/kubelet.crt"), filepath.Join(d, "kubelet/pki/kubelet.key"),
			filepath.Join(d, "manifests"), filepath.Join(d, "pod-logs")),
	}
	for name, content := range files {
		p := filepath.Join(d, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join(d, "manifests"), 0o755)
}

func (n *Node) startContainerd(ctx context.Context) error {
	env := append(os.Environ(), "PATH="+n.binDir+":"+os.Getenv("PATH"))
	p, err := n.start("containerd", env, "--config", filepath.Join(n.dir, "containerd", "config.toml"), "--log-level", "warn")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, time.Minute, p, func() error {
		return exec.CommandContext(ctx, filepath.Join(n.binDir, "ctr"), "--address", n.sock(), "version").Run()
	}); err != nil {
		return fmt.Errorf("realnode: containerd did not answer: %w\n--- containerd log tail ---\n%s", err, p.Tail(40))
	}
	n.logf("containerd up")
	return nil
}

// Stop tears the node down: the kubelet, then every container (killed by
// its task's process ID), containerd, its shims, the controller-manager and
// scheduler, the control plane; then mounts, kubepods cgroups, host
// directories created since Start, the temporary directory and the lock.
// It returns what it could not clean. Safe to call more than once.
func (n *Node) Stop() error {
	var errs []error
	n.mu.Lock()
	procs := slices.Clone(n.procs)
	n.procs = nil
	n.mu.Unlock()
	byName := map[string]*proc.Proc{}
	for _, p := range procs {
		byName[p.Name] = p
	}
	// The kubelet first, so it does not restart what is stopped next.
	byName["kubelet"].Stop(20 * time.Second)
	if p := byName["containerd"]; p != nil && p.Running() {
		n.killTasks()
	}
	for _, name := range []string{"containerd", "kube-scheduler", "kube-controller-manager"} {
		byName[name].Stop(10 * time.Second)
	}
	if n.CP != nil {
		if err := n.CP.Stop(); err != nil {
			errs = append(errs, err)
		}
		n.CP = nil
	}
	if n.dir != "" {
		if err := sweep(n.binDir, n.dir); err != nil {
			errs = append(errs, err)
		}
		for _, d := range hostDirs {
			if !n.preexist[d] {
				if err := os.RemoveAll(d); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if os.Getenv("FLEETAGENT_KEEP_REALNODE") == "" {
			if err := os.RemoveAll(n.dir); err != nil {
				errs = append(errs, err)
			}
		}
		n.dir = ""
	}
	if n.lock != nil {
		n.lock.Close()
		n.lock = nil
	}
	return errors.Join(errs...)
}

// killTasks kills every CRI container's task by its process ID and deletes
// it, so no container outlives the node.
func (n *Node) killTasks() {
	ctr := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, filepath.Join(n.binDir, "ctr"),
			append([]string{"--address", n.sock(), "--namespace", "k8s.io"}, args...)...).Output()
		return string(out)
	}
	sc := bufio.NewScanner(strings.NewReader(ctr("tasks", "ls")))
	var ids []string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] != "TASK" {
			if pid, err := strconv.Atoi(f[1]); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			ids = append(ids, f[0])
		}
	}
	for _, id := range ids {
		ctr("tasks", "delete", "--force", id)
	}
}

// sweep kills containerd shims started from binDir (all of them when dir
// is "", else those of the node in dir), kills what is left in kubepods
// cgroups, unmounts everything under the node's directories (every
// fleetagent-realnode-* temp dir when dir is ""), and removes the kubepods
// cgroups, deepest first.
func sweep(binDir, dir string) error {
	var errs []error
	shim := filepath.Join(binDir, "containerd-shim-runc-v2")
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		exe, err := os.Readlink(filepath.Join(p, "exe"))
		if err != nil || exe != shim {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		if dir == "" || strings.Contains(string(cmdline), dir) {
			pid, _ := strconv.Atoi(filepath.Base(p))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	cgroups := kubepodsCgroups()
	for _, cg := range cgroups {
		b, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	prefix := dir
	if prefix == "" {
		prefix = filepath.Join(os.TempDir(), "fleetagent-realnode-")
	}
	mounts, err := mountsUnder(prefix)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	// Processes take a moment to leave their cgroups after SIGKILL.
	deadline := time.Now().Add(10 * time.Second)
	for _, cg := range cgroups {
		for {
			err := os.Remove(cg)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", cg, err))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// kubepodsCgroups lists every kubepods cgroup directory under every
// hierarchy, deepest first.
func kubepodsCgroups() []string {
	var all []string
	tops, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	top2, _ := filepath.Glob("/sys/fs/cgroup/kubepods*")
	for _, top := range append(tops, top2...) {
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
	}
	slices.SortFunc(all, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return all
}

// mountsUnder lists mount points starting with prefix, deepest first.
func mountsUnder(prefix string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(unescape(f[4]), prefix) {
			out = append(out, unescape(f[4]))
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out), nil
}

func unescape(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func selfSigned(name string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name + "@kubelet"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{name},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// TLSConfig trusts the kubelet's certificate, for a test's own scrapes.
func (n *Node) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(n.kubeletCA)
	return &tls.Config{RootCAs: pool, ServerName: NodeName}
}

func (n *Node) start(name string, env []string, args ...string) (*proc.Proc, error) {
	// The child dies with the test binary even if it never calls Stop; the
	// next Start sweeps what such a death leaves.
	p, err := proc.Start(proc.Spec{
		Name:    name,
		Path:    filepath.Join(n.binDir, name),
		Args:    args,
		Env:     env,
		LogPath: filepath.Join(n.dir, name+".log"),
	})
	if err != nil {
		return nil, fmt.Errorf("realnode: %w", err)
	}
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	n.logf("started %s (pid %d)", name, p.Cmd.Process.Pid)
	return p, nil
}

func waitFor(ctx context.Context, timeout time.Duration, p *proc.Proc, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return proc.WaitFor(ctx, p, 200*time.Millisecond, check)
}
