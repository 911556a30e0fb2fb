package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/internal/selfmetrics"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
)

var (
	cp      *controlplane.ControlPlane
	admin   kubernetes.Interface
	cluster *simcluster.Cluster
)

const agentUser = "agent-e2e"

// Users of the kubelet-source tests, one each so the audit log attributes
// their requests.
const (
	kubeletUser     = "agent-kubelet"
	kubeletNodeUser = "agent-kubelet-node"
	fallbackUser    = "agent-fallback"
)

func TestMain(m *testing.M) {
	os.Exit(controlplane.Main(m, controlplane.MainOptions{
		Options: controlplane.Options{Users: []string{"agent-norbac"}, Audit: true},
		Agents:  []string{agentUser, kubeletUser, kubeletNodeUser, fallbackUser},
		Keep:    &cp,
		Setup: func(ctx context.Context, _ *controlplane.ControlPlane) (err error) {
			admin = kubernetes.NewForConfigOrDie(cp.AdminConfig())
			cluster, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: 6, PodsPerNode: 8, Namespaces: 3, NodePrefix: "e2e-node"})
			return err
		},
	}))
}

// newRig builds an agent for node against the real apiserver, a stand-in
// kubelet serving the node's real pods and a real OTLP receiver.
func newRig(t *testing.T, node, user string, mutate func(*agent.Config)) *agentrig.Rig {
	t.Helper()
	return agentrig.New(t, agentrig.Options{CP: cp, Node: node, User: user, Config: func(c *agent.Config) {
		if mutate != nil {
			mutate(c)
		}
	}, ExportTimeout: 5 * time.Second})
}

// waitExport waits for a product export for which ok returns true.
func waitExport(t *testing.T, r *agentrig.Rig, what string, ok func([]otlpreceiver.Point) bool) []otlpreceiver.Point {
	t.Helper()
	return r.WaitExport(t, 60*time.Second, what, func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.node.cpu.usage", nil)) > 0 && ok(pts)
	})
}

// TestEndToEnd runs the whole pipeline: real apiserver → node-scoped
// informers → collectors (plus a recorded kubelet) → OTel SDK → OTLP gRPC →
// a real OTLP receiver, and checks what arrives.
func TestEndToEnd(t *testing.T) {
	node := cluster.NodeNames()[0]
	r := newRig(t, node, agentUser, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.Agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = r.Agent.Shutdown(context.Background())
		}
	}()

	want := agentrig.PodsOn(t, cp, node)
	if len(want) == 0 {
		t.Fatalf("simulated cluster has no pods on %s", node)
	}
	pts := waitExport(t, r, "every pod on the node has a phase", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", map[string]string{"k8s.pod.status.phase": "Running"})) == len(want)
	})

	// Resource and identity.
	if got := pts[0].Resource["k8s.node.name"]; got != node {
		t.Errorf("resource k8s.node.name = %q, want %q", got, node)
	}
	// Only this node's pods, each with its identity and workload.
	for _, p := range want {
		ph := otlpreceiver.Find(pts, "k8s.pod.status.phase", map[string]string{
			"k8s.pod.name": p.Name, "k8s.namespace.name": p.Namespace, "k8s.pod.uid": string(p.UID),
			"k8s.pod.status.phase": string(p.Status.Phase),
		})
		if len(ph) != 1 || ph[0].Value != 1 || ph[0].Unit != "{pod}" {
			t.Errorf("pod %s/%s phase points %+v", p.Namespace, p.Name, ph)
			continue
		}
		if len(p.OwnerReferences) > 0 {
			var hasWorkload bool
			for k, v := range ph[0].All() {
				if strings.HasPrefix(k, "k8s.") && strings.HasSuffix(k, ".name") && k != "k8s.pod.name" && k != "k8s.namespace.name" && k != "k8s.node.name" && k != "k8s.cluster.name" && k != "k8s.container.name" && v != "" {
					hasWorkload = true
				}
			}
			if !hasWorkload {
				t.Errorf("pod %s owned by %s has no workload attribute: %v", p.Name, p.OwnerReferences[0].Kind, ph[0].All())
			}
		}
	}
	for _, pt := range otlpreceiver.Find(pts, "k8s.pod.status.phase", nil) {
		found := false
		for _, p := range want {
			found = found || p.Name == pt.Get("k8s.pod.name")
		}
		if !found {
			t.Errorf("exported a pod that is not on %s: %v", node, pt.All())
		}
	}
	// Node state from the node's own Node object.
	if c := otlpreceiver.Find(pts, "k8s.node.condition.status", map[string]string{"k8s.node.condition.type": "Ready", "k8s.node.condition.status": "true"}); len(c) != 1 || c[0].Value != 1 {
		t.Errorf("node Ready condition points: %+v", otlpreceiver.Find(pts, "k8s.node.condition.status", nil))
	}
	if a := otlpreceiver.Find(pts, "k8s.node.cpu.allocatable", nil); len(a) != 1 || a[0].Value <= 0 || a[0].Unit != "{cpu}" {
		t.Errorf("k8s.node.cpu.allocatable points: %+v", a)
	}
	// Usage from the recorded kubelet, value for value.
	sum, err := r.Kubelet.Summary()
	if err != nil {
		t.Fatal(err)
	}
	cpu := otlpreceiver.Find(pts, "k8s.node.cpu.usage", nil)
	if len(cpu) != 1 || cpu[0].Unit != "{cpu}" || cpu[0].Value != float64(*sum.Node.CPU.UsageNanoCores)/1e9 {
		t.Errorf("k8s.node.cpu.usage = %+v, want %v cores", cpu, float64(*sum.Node.CPU.UsageNanoCores)/1e9)
	}
	p0 := sum.Pods[0]
	ws := otlpreceiver.Find(pts, "k8s.pod.memory.working_set", map[string]string{"k8s.pod.name": p0.PodRef.Name, "k8s.namespace.name": p0.PodRef.Namespace})
	if len(ws) != 1 || ws[0].Unit != "By" || ws[0].Value != float64(*p0.Memory.WorkingSetBytes) {
		t.Errorf("k8s.pod.memory.working_set for %s = %+v, want %d By", p0.PodRef.Name, ws, *p0.Memory.WorkingSetBytes)
	}

	// The kubelet serves the node's real pods (names and UIDs), so its
	// usage joins the informers' pods by UID: every pod's kubelet series is
	// on the same resource as its phase, workload attributes included.
	for _, p := range want {
		usage := otlpreceiver.Find(pts, "k8s.pod.cpu.usage", map[string]string{"k8s.pod.uid": string(p.UID)})
		phase := otlpreceiver.Find(pts, "k8s.pod.status.phase", map[string]string{"k8s.pod.uid": string(p.UID), "k8s.pod.status.phase": "Running"})
		if len(usage) != 1 || len(phase) != 1 {
			t.Errorf("pod %s: %d kubelet usage and %d phase points, want 1 each", p.Name, len(usage), len(phase))
			continue
		}
		if fmt.Sprint(usage[0].Resource) != fmt.Sprint(phase[0].Resource) {
			t.Errorf("pod %s: kubelet resource %v, informer resource %v: the UID join did not run", p.Name, usage[0].Resource, phase[0].Resource)
		}
	}

	// Admin endpoints.
	base := "http://" + r.Agent.AdminAddr()
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d %s", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/readyz %d %q", code, body)
	}
	_, metrics := get(t, base+"/metrics")
	// Every self-metric of the table is served (the table is the README's).
	for _, d := range selfmetrics.Table {
		if m := strings.ReplaceAll(d.Name, ".", "_"); !strings.Contains(metrics, "\n"+m) {
			t.Errorf("/metrics lacks %s (%s)", m, d.Name)
		}
	}
	// The Go runtime's and the process's own metrics: the footprint.
	for _, m := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if !strings.Contains(metrics, "\n"+m+" ") {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if strings.Contains(metrics, "k8s_pod_status_phase") {
		t.Errorf("/metrics carries product metrics; it is for the agent's own")
	}

	// A deleted pod's series disappear.
	gone := want[0]
	if err := admin.CoreV1().Pods(gone.Namespace).Delete(ctx, gone.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitExport(t, r, "the deleted pod's series are gone", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", map[string]string{"k8s.pod.name": gone.Name})) == 0 &&
			len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) > 0
	})

	// Kill switch: Kubernetes-derived series are withheld as stale, kubelet
	// metrics go on, /readyz says why; removing it resumes.
	if err := os.WriteFile(r.KillSwitch, []byte("on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitExport(t, r, "the kill switch withholds pod state but kubelet usage continues", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) == 0 && len(otlpreceiver.Find(pts, "k8s.pod.memory.working_set", nil)) > 0
	})
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, "degraded") || !strings.Contains(body, "kill switch") {
		t.Errorf("/readyz under kill switch: %d %q", code, body)
	}
	if err := os.WriteFile(r.KillSwitch, []byte("off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitExport(t, r, "pod state is back after the kill switch is off", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) > 0
	})

	// Stop: a final export, idempotent shutdown.
	before := r.Agent.ExportStats().Exports
	if err := r.Agent.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	stopped = true
	if r.Agent.ExportStats().Exports <= before {
		t.Errorf("no final export on shutdown (exports %d before, %d after)", before, r.Agent.ExportStats().Exports)
	}
	if err := r.Agent.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}

	// Every apiserver request this agent made was node-scoped.
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range controlplane.UserEvents(events, agentUser) {
		n++
		q := e.Query()
		switch e.Verb {
		case "list", "watch":
			sel := q.Get("fieldSelector")
			if sel != "spec.nodeName="+node && sel != "metadata.name="+node {
				t.Errorf("%s without the node's selector: %s", e.Verb, e.RequestURI)
			}
		case "get":
			if q.Get("resourceVersion") == "" {
				t.Errorf("GET with an empty resourceVersion reads etcd: %s", e.RequestURI)
			}
		}
	}
	if n == 0 {
		t.Fatal("no audit events for the agent's user")
	}
}

// TestDegradedWithoutRBAC: an agent that cannot list keeps exporting
// kubelet metrics, reports why on /readyz, and stops cleanly.
func TestDegradedWithoutRBAC(t *testing.T) {
	node := cluster.NodeNames()[1]
	r := newRig(t, node, "agent-norbac", func(c *agent.Config) { c.SyncTimeout = 3 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Agent.Start(ctx); err != nil {
		t.Fatalf("start must not fail when the informers cannot sync: %v", err)
	}
	defer r.Agent.Shutdown(context.Background())
	waitExport(t, r, "kubelet metrics flow without Kubernetes state", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.memory.working_set", nil)) > 0 && len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) == 0
	})
	code, body := get(t, "http://"+r.Agent.AdminAddr()+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "forbidden") {
		t.Errorf("/readyz without RBAC: %d %q, want 503 naming the forbidden list", code, body)
	}
	if err := r.Agent.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRunStopsOnCancelDuringStartup: SIGTERM (ctx cancel) while the
// informers wait for their first sync (here they never get it: the user
// has no RBAC) stops cleanly and promptly, and the sync wait was really
// under way when it came: the informers had listed and been refused.
func TestRunStopsOnCancelDuringStartup(t *testing.T) {
	node := cluster.NodeNames()[2]
	r := newRig(t, node, "agent-norbac", func(c *agent.Config) { c.SyncTimeout = time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Agent.Run(ctx) }()
	agentrig.WaitFor(t, 30*time.Second, "the informers are refused while waiting for their first sync", func() bool {
		h := r.Agent.Health()
		return r.Agent.Informers().LastError() != nil && !h.Ready && strings.Contains(h.Reason, "forbidden")
	}, r.Logs.String)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel during the sync wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return within 30s of cancel during the sync wait; log:\n%s", r.Logs)
	}
}

func TestNewReportsConfigProblems(t *testing.T) {
	cfg := agent.DefaultConfig()
	_, err := agent.New(cfg, agent.Options{RESTConfig: cp.AdminConfig()})
	if err == nil || !strings.Contains(err.Error(), "node name is empty") {
		t.Fatalf("want config error, got %v", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
