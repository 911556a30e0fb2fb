package deploy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fleetagent/fleetagent/deploy/kustomizetest"
	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/apply"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/testpki"
)

// TestKubeletCAComponent applies the fleet overlay with
// components/kubelet-ca as its documented overlay uses it (a
// configMapGenerator with the bundle), and runs the real agent binary with
// the resulting DaemonSet's environment and the generated ConfigMap's
// bundle at the mounted path, against an HTTPS stand-in kubelet serving the
// kind of certificate a kubelet makes for itself (its own CA, the hostname
// only, no IP). The agent verifies it, becomes ready, and exports the
// kubelet's usage.
func TestKubeletCAComponent(t *testing.T) {
	bin := agentbin.Build(t)
	const node = "node-1"
	cert, kubeletCrt, err := testpki.KubeletSelfSigned(node)
	if err != nil {
		t.Fatal(err)
	}
	_, otherCrt, err := testpki.KubeletSelfSigned("node-2")
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(otherCrt, kubeletCrt...)

	// The user's overlay, as components/kubelet-ca/kustomization.yaml shows it.
	dir := kustomizetest.Overlay{
		Resource:   "overlays/fleet",
		Components: []string{"components/kubelet-ca"},
		Extra: `configMapGenerator:
- name: fleetagent-kubelet-ca
  namespace: fleetagent
  files:
  - ca.crt=kubelets.pem
`,
		Files: map[string][]byte{"kubelets.pem": bundle},
	}.Write(t, ".")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := newApplier(t)
	a.Warnings()
	live := a.Apply(ctx, t, render(t, dir))
	// Later tests expect the fleet overlay as it is.
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		a.Apply(cctx, t, render(t, "overlays/fleet"))
	})
	if w := a.Warnings(); len(w) > 0 {
		t.Errorf("applying the fleet overlay with components/kubelet-ca drew warnings (Pod Security?):\n%s", strings.Join(w, "\n"))
	}
	ds := apply.Find[appsv1.DaemonSet](t, live, "DaemonSet", agentName)
	prepareNode(ctx, t, ds, node)
	c := ds.Spec.Template.Spec.Containers[0]
	env := containerEnv(t, c, map[string]string{"spec.nodeName": node, "status.hostIP": "127.0.0.1", "metadata.namespace": namespace})
	if got := env["FLEETAGENT_KUBELET_TLS_SERVER_NAME"]; got != node {
		t.Errorf("FLEETAGENT_KUBELET_TLS_SERVER_NAME = %q in the pod, want the node name %q", got, node)
	}

	// Follow FLEETAGENT_KUBELET_CA_FILE to its ConfigMap, and put the
	// ConfigMap's key where a temporary directory stands in for the mount.
	caFile := env["FLEETAGENT_KUBELET_CA_FILE"]
	cm := mountedConfigMap(t, ds, live, caFile)
	if cm.Data[path.Base(caFile)] != string(bundle) {
		t.Fatalf("ConfigMap %s key %s does not hold the bundle", cm.Name, path.Base(caFile))
	}
	mount := t.TempDir()
	env["FLEETAGENT_KUBELET_CA_FILE"] = filepath.Join(mount, path.Base(caFile))
	writeFile(t, env["FLEETAGENT_KUBELET_CA_FILE"], []byte(cm.Data[path.Base(caFile)]))

	p := runWithKubelet(ctx, t, bin, ds, env, cert)
	defer p.stop()
	p.waitReady(ctx, "start", func(body string) bool { return body == "ok" })
	if !strings.Contains(p.metrics(ctx), "fleetagent_collector_kubelet_up") {
		t.Errorf("no fleetagent_collector_kubelet_up on /metrics")
	}
	p.stop()
	for _, m := range []string{"k8s.node.cpu.usage", "fleetagent.collector.kubelet.up"} {
		if !p.exported(node, m) {
			t.Errorf("no %s from %s reached the OTLP receiver; agent log:\n%s", m, node, p.logs.String())
		}
	}
}

// mountedConfigMap follows file to the directory volume mount that holds it
// and returns the ConfigMap behind that volume.
func mountedConfigMap(t *testing.T, ds *appsv1.DaemonSet, live []*unstructured.Unstructured, file string) *corev1.ConfigMap {
	t.Helper()
	c := ds.Spec.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if m.MountPath != path.Dir(file) || m.SubPath != "" {
			continue
		}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				if v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
					t.Errorf("volume %s: the kubelet CA ConfigMap is optional; a pod without it would start with nothing to verify against", v.Name)
				}
				return apply.Find[corev1.ConfigMap](t, live, "ConfigMap", v.ConfigMap.Name)
			}
		}
	}
	t.Fatalf("%s is not in a ConfigMap directory mount: %s", file, mustJSON(c.VolumeMounts))
	return nil
}

// prepareNode gives the DaemonSet the status the agent reads its fleet size
// from and creates the node it runs on: no DaemonSet controller or
// scheduler runs here.
func prepareNode(ctx context.Context, t *testing.T, ds *appsv1.DaemonSet, node string) {
	t.Helper()
	cs := adminClient()
	ds.Status.DesiredNumberScheduled = 1
	if _, err := cs.AppsV1().DaemonSets(namespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set DaemonSet status: %v", err)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// kubeletStandIn serves the recorded /stats/summary over HTTPS with cert,
// to the bearer token alone (401 otherwise, as a kubelet with webhook
// authentication answers), and returns its base URL.
func kubeletStandIn(t *testing.T, cert tls.Certificate, token string) string {
	t.Helper()
	kub, err := fakekubelet.StartWith(filepath.Join("..", "collector", "testdata", "summary.json"), "", fakekubelet.Options{
		TLS:    &tls.Config{Certificates: []tls.Certificate{cert}},
		Tokens: map[string]bool{token: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kub.Close)
	return kub.URL()
}

// agentProcess is the agent binary running as a DaemonSet's pod would,
// with what a pod provides replaced by local stand-ins.
type agentProcess struct {
	t        *testing.T
	cmd      *exec.Cmd
	exited   chan error
	logs     *bytes.Buffer // read only once the process has exited
	admin    string
	ready    *corev1.Probe
	grace    time.Duration
	recv     *otlpreceiver.Receiver
	killFile string
	stopped  bool
}

// runWithKubelet starts bin with env, standing in for what a pod has:
//   - the kubelet at https://$(NODE_IP):10250 is an HTTPS stand-in serving
//     cert on a free loopback port (10250 may be a real kubelet's);
//   - the service-account token mount is a file holding the agent user's
//     token, which the stand-in requires;
//   - the kill-switch file and the fleet-size hint are in a temporary
//     directory standing in for the ConfigMap volume, with the ConfigMap's
//     content (killFile), the hint set as an install sets it;
//   - a kubeconfig replaces the in-cluster token; the admin port is a free
//     loopback port; the OTLP endpoint is a real receiver on loopback.
func runWithKubelet(ctx context.Context, t *testing.T, bin string, ds *appsv1.DaemonSet, env map[string]string, cert tls.Certificate) *agentProcess {
	t.Helper()
	c := ds.Spec.Template.Spec.Containers[0]
	dir := t.TempDir()
	killFile := ""
	for _, m := range c.VolumeMounts {
		if f, ok := env["FLEETAGENT_KILL_SWITCH_FILE"]; ok && path.Dir(f) == m.MountPath {
			killFile = filepath.Join(dir, path.Base(f))
		}
	}
	if killFile == "" {
		t.Fatalf("FLEETAGENT_KILL_SWITCH_FILE %q is not in a mounted volume", env["FLEETAGENT_KILL_SWITCH_FILE"])
	}
	cm, err := adminClient().CoreV1().ConfigMaps(namespace).Get(ctx, "fleetagent-control", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range cm.Data {
		writeFile(t, filepath.Join(dir, k), []byte(v))
	}
	writeFile(t, killFile, []byte(cm.Data[filepath.Base(killFile)]))
	env["FLEETAGENT_KILL_SWITCH_FILE"] = killFile
	// The fleet-size hint is read from the same volume (the agent's default
	// path); an install writes the number of nodes into it: one here.
	hint := filepath.Join(dir, "fleet-size-hint")
	if _, ok := cm.Data["fleet-size-hint"]; !ok {
		writeFile(t, hint, []byte("1"))
	}
	env["FLEETAGENT_FLEET_SIZE_HINT_FILE"] = hint

	if v, ok := env["FLEETAGENT_KUBELET_ENDPOINT"]; ok {
		t.Fatalf("the manifest sets FLEETAGENT_KUBELET_ENDPOINT=%q; the agent must derive it from NODE_IP", v)
	}
	if _, ok := env["FLEETAGENT_KUBELET_TOKEN_FILE"]; ok {
		t.Fatal("the manifest sets FLEETAGENT_KUBELET_TOKEN_FILE; the agent must use the service-account token")
	}
	token := cp.UserConfig(agentUser).BearerToken
	env["FLEETAGENT_KUBELET_ENDPOINT"] = strings.Replace(kubeletStandIn(t, cert, token), "127.0.0.1", env["NODE_IP"], 1)
	env["FLEETAGENT_KUBELET_TOKEN_FILE"] = filepath.Join(dir, "token")
	writeFile(t, env["FLEETAGENT_KUBELET_TOKEN_FILE"], []byte(token))
	env["KUBECONFIG"] = cp.Kubeconfig(t, agentUser)
	p := &agentProcess{t: t, admin: "127.0.0.1:" + agentbin.FreePort(t), ready: c.ReadinessProbe, logs: &bytes.Buffer{}, killFile: killFile,
		grace: time.Duration(*ds.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second}
	env["FLEETAGENT_ADMIN_ADDRESS"] = p.admin
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
	p.recv = recv
	// The same scheme and protocol (gRPC) as the manifest's endpoint.
	if u, err := url.Parse(env["OTEL_EXPORTER_OTLP_ENDPOINT"]); err != nil || u.Port() != "4317" || env["OTEL_EXPORTER_OTLP_PROTOCOL"] != "grpc" {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT %q with protocol %q: want the gateway's OTLP/gRPC port 4317", env["OTEL_EXPORTER_OTLP_ENDPOINT"], env["OTEL_EXPORTER_OTLP_PROTOCOL"])
	} else {
		env["OTEL_EXPORTER_OTLP_ENDPOINT"] = u.Scheme + "://" + recv.GRPCAddr()
	}

	p.cmd = exec.Command(bin)
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan error, 1)
	go func() { p.exited <- p.cmd.Wait() }()
	return p
}

// stop sends SIGTERM and waits up to the pod's grace period; after a test
// failure it sends SIGQUIT for a goroutine dump in the log instead.
func (p *agentProcess) stop() {
	t := p.t
	if p.stopped {
		return
	}
	p.stopped = true
	if t.Failed() {
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		<-p.exited
		t.Logf("agent stopped with SIGQUIT after the failure\n--- agent log ---\n%s", p.logs.String())
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM\n--- agent log ---\n%s", err, p.logs.String())
		}
	case <-time.After(p.grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("agent did not exit within the pod's terminationGracePeriodSeconds after SIGTERM\n--- agent log ---\n%s", p.logs.String())
	}
}

// get asks the admin server, with the probe's own timeout.
func (p *agentProcess) get(ctx context.Context, urlPath string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+urlPath, nil)
	if err != nil {
		return 0, "", err
	}
	hc := &http.Client{Timeout: time.Duration(p.ready.TimeoutSeconds) * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// waitReady polls the readiness probe's path until it answers 200 with a
// body that satisfies want.
func (p *agentProcess) waitReady(ctx context.Context, what string, want func(string) bool) {
	t := p.t
	t.Helper()
	var code int
	var body string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-p.exited:
			p.exited <- err
			return false, fmt.Errorf("agent exited: %v", err)
		default:
		}
		var err error
		code, body, err = p.get(ctx, p.ready.HTTPGet.Path)
		if err != nil {
			body = err.Error()
		}
		return err == nil && code == http.StatusOK && want(body), nil
	})
	if err != nil {
		t.Fatalf("%s: readiness probe %s last answered %d %q: %v", what, p.ready.HTTPGet.Path, code, body, err)
	}
}

func (p *agentProcess) metrics(ctx context.Context) string {
	_, body, err := p.get(ctx, "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	return body
}

// exported reports whether an export from node carried metric.
func (p *agentProcess) exported(node, metric string) bool {
	for _, e := range p.recv.Exports() {
		for _, pt := range e.Points {
			if pt.Resource["k8s.node.name"] == node && pt.Metric == metric {
				return true
			}
		}
	}
	return false
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	kustomizetest.WriteFile(t, p, b)
}
