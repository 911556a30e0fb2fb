package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestAgentRunsWithTheManifests runs the real agent binary, built as the
// Dockerfile builds it, with exactly the environment the fleet overlay's
// DaemonSet gives it, as the agent's service account with only the RBAC
// the manifests grant. It shows what reading the manifests cannot: the
// agent accepts that configuration, becomes ready through the readiness
// probe's own path, sends its requests into the agent's priority level, and
// the kill-switch file at the mounted path closes its watches and reopens
// them when switched off.
//
// What differs from a pod, and why: a kubeconfig replaces the in-cluster
// token (no pod, no projected token); the admin port is a free loopback
// port (no pod network namespace); the kill-switch directory is a temporary
// directory standing in for the ConfigMap volume; the OTLP endpoint is a
// real OTLP receiver on loopback (the gateway's cluster DNS name does not
// resolve here).
func TestAgentRunsWithTheManifests(t *testing.T) {
	// The first build compiles the agent's dependencies: minutes on a
	// loaded machine, so it runs before the test's own deadline starts.
	bin := buildAgent(t)
	live := applyFleet(t)
	ds := find[appsv1.DaemonSet](t, live, "DaemonSet", agentName)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := adminClient()

	// No DaemonSet controller or scheduler runs here: give the DaemonSet the
	// status the agent reads its fleet size from, and the node it runs on.
	ds.Status.DesiredNumberScheduled = 1
	if _, err := cs.AppsV1().DaemonSets(namespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set DaemonSet status: %v", err)
	}
	const node = "node-1"
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	dir := t.TempDir()
	c := ds.Spec.Template.Spec.Containers[0]
	env := containerEnv(t, c, map[string]string{"spec.nodeName": node, "status.hostIP": "127.0.0.1", "metadata.namespace": namespace})

	killFile := ""
	for _, m := range c.VolumeMounts {
		if f, ok := env["FLEETAGENT_KILL_SWITCH_FILE"]; ok && path.Dir(f) == m.MountPath {
			killFile = filepath.Join(dir, path.Base(f))
		}
	}
	if killFile == "" {
		t.Fatalf("FLEETAGENT_KILL_SWITCH_FILE %q is not in a mounted volume", env["FLEETAGENT_KILL_SWITCH_FILE"])
	}
	cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, "fleetagent-control", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(killFile, []byte(cm.Data[filepath.Base(killFile)]), 0o644); err != nil {
		t.Fatal(err)
	}
	env["FLEETAGENT_KILL_SWITCH_FILE"] = killFile
	env["KUBECONFIG"] = writeKubeconfig(t, dir, agentUser)
	adminAddr := "127.0.0.1:" + freePort(t)
	env["FLEETAGENT_ADMIN_ADDRESS"] = adminAddr
	// A real OTLP receiver stands in for the gateway Service, on the same
	// scheme and protocol (gRPC) as the manifest's endpoint.
	recv, err := otlpreceiver.Start(otlpreceiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Shutdown(context.Background())
	if u, err := url.Parse(env["OTEL_EXPORTER_OTLP_ENDPOINT"]); err != nil || u.Port() != "4317" || env["OTEL_EXPORTER_OTLP_PROTOCOL"] != "grpc" {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT %q with protocol %q: want the gateway's OTLP/gRPC port 4317", env["OTEL_EXPORTER_OTLP_ENDPOINT"], env["OTEL_EXPORTER_OTLP_PROTOCOL"])
	} else {
		env["OTEL_EXPORTER_OTLP_ENDPOINT"] = u.Scheme + "://" + recv.GRPCAddr()
	}

	watches := func() float64 {
		m := metrics(t)
		return controlplane.Sum(m, "apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "pods"}) +
			controlplane.Sum(m, "apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "nodes"})
	}
	// The apiserver's own loopback informers watch pods and nodes too; the
	// agent's two watches come on top of theirs.
	baseline := watches()
	before := metrics(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		if t.Failed() {
			// A goroutine dump in the log says where the agent was stuck.
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			<-exited
			t.Logf("agent stopped with SIGQUIT after the failure\n--- agent log ---\n%s", logs.String())
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("agent exited with %v after SIGTERM\n--- agent log ---\n%s", err, logs.String())
			}
		case <-time.After(time.Duration(*ds.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("agent did not exit within the pod's terminationGracePeriodSeconds after SIGTERM\n--- agent log ---\n%s", logs.String())
		}
	}
	defer stop()

	probe := func(p *corev1.Probe) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+p.HTTPGet.Path, nil)
		if err != nil {
			return 0, "", err
		}
		// The kubelet gives a probe timeoutSeconds to answer.
		hc := &http.Client{Timeout: time.Duration(p.TimeoutSeconds) * time.Second}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), nil
	}
	// waitReady polls the readiness probe until its body satisfies want.
	waitReady := func(what string, want func(string) bool) {
		t.Helper()
		var code int
		var body string
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			select {
			case err := <-exited:
				return false, fmt.Errorf("agent exited: %v", err)
			default:
			}
			var err error
			code, body, err = probe(c.ReadinessProbe)
			if err != nil {
				body = err.Error()
			}
			return err == nil && code == http.StatusOK && want(body), nil
		})
		if err != nil {
			t.Fatalf("%s: readiness probe %s last answered %d %q: %v", what, c.ReadinessProbe.HTTPGet.Path, code, body, err)
		}
	}
	waitWatches := func(what string, want func(float64) bool) {
		t.Helper()
		var n float64
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			n = watches()
			return want(n), nil
		})
		if err != nil {
			t.Fatalf("%s: %v open pod and node watches: %v", what, n, err)
		}
	}

	waitReady("start", func(body string) bool { return body == "ok" })
	if code, body, err := probe(c.LivenessProbe); err != nil || code != http.StatusOK {
		t.Errorf("liveness probe %s: %d %q %v", c.LivenessProbe.HTTPGet.Path, code, body, err)
	}
	waitWatches("started agent", func(n float64) bool { return n == baseline+2 })

	after := metrics(t)
	ours := map[string]string{"priority_level": "fleetagent", "flow_schema": "fleetagent"}
	if got := controlplane.Sum(after, "apiserver_flowcontrol_dispatched_requests_total", ours) - controlplane.Sum(before, "apiserver_flowcontrol_dispatched_requests_total", ours); got < 3 {
		t.Errorf("the agent's start (LIST + WATCH of pods and node, GET of its DaemonSet) dispatched %v requests in the fleetagent level, want at least 3", got)
	}
	other := map[string]string{"priority_level": "workload-low"}
	if got := controlplane.Sum(after, "apiserver_flowcontrol_dispatched_requests_total", other) - controlplane.Sum(before, "apiserver_flowcontrol_dispatched_requests_total", other); got != 0 {
		t.Errorf("%v requests dispatched in workload-low while only the agent ran, want 0", got)
	}

	// The switch as an operator flips it: the file at the mounted path.
	if err := os.WriteFile(killFile, []byte("on\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitReady("kill switch on", func(body string) bool { return strings.Contains(body, "kill switch") })
	waitWatches("kill switch on", func(n float64) bool { return n == baseline })

	if err := os.WriteFile(killFile, []byte("off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitWatches("kill switch off", func(n float64) bool { return n == baseline+2 })
	waitReady("kill switch off", func(body string) bool { return body == "ok" })
	stop()
	// Shutdown ends with a final export, so something has arrived, tagged
	// with the node from the downward API.
	var fromNode int
	for _, e := range recv.Exports() {
		for _, p := range e.Points {
			if p.Resource["k8s.node.name"] == node {
				fromNode++
			}
		}
	}
	if st := recv.Stats(); st.Accepted == 0 || fromNode == 0 {
		t.Errorf("OTLP receiver accepted %d exports, %d points from k8s.node.name=%s; want the agent's exports", st.Accepted, fromNode, node)
	}
}

// buildAgent builds ./cmd/fleetagent as `make build` and the Dockerfile do
// (static, trimmed), in the agent's own module.
func buildAgent(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fleetagent")
	cmd := exec.Command("go", "build", "-C", "..", "-trimpath", "-o", out, "./cmd/fleetagent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, b)
	}
	return out
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv resolves a container's env as the kubelet does: downward API
// fields from fields, resource limits from the container, and $(VAR)
// references to variables defined earlier in the list.
func containerEnv(t *testing.T, c corev1.Container, fields map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				if v, ok := env[envRef.FindStringSubmatch(ref)[1]]; ok {
					return v
				}
				return ref
			})
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: no value for field %s in this test", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			env[e.Name] = fmt.Sprint(c.Resources.Limits.Memory().Value() / e.ValueFrom.ResourceFieldRef.Divisor.Value())
		default:
			t.Fatalf("env %s: source %+v not handled by this test", e.Name, e.ValueFrom)
		}
	}
	return env
}

func writeKubeconfig(t *testing.T, dir, user string) string {
	t.Helper()
	rc := cp.UserConfig(user)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "agent"}
	cfg.CurrentContext = "test"
	p := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
