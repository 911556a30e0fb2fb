package faultsuite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
	"github.com/fleetagent/fleetagent/limiter"
)

var (
	cp         *controlplane.ControlPlane
	admin      kubernetes.Interface
	closeAdmin func()
	cluster    *simcluster.Cluster
)

const (
	fleetSize = 30
	hogUser   = "fault-hog"
	norbac    = "fault-norbac"
	summary   = "../../../collector/testdata/summary.json"
)

func fleetUser(i int) string { return fmt.Sprintf("fault-%02d", i) }

// Users of the single-agent cases, one each so the audit log attributes
// their requests.
const (
	goneUser    = "fault-gone"
	apfUser     = "fault-apf"
	slowUser    = "fault-slow"
	otlpUser    = "fault-otlp"
	kubeletUser = "fault-kubelet"
	probeUser   = "fault-probe"
	sigUser     = "fault-sig"
	localUser   = "fault-local" // TestNodeLocalFirst, one subtest at a time
	identUser   = "fault-ident" // TestSeriesKeepIdentityAcrossKillSwitch
)

func TestMain(m *testing.M) {
	var agents []string
	for i := 0; i < fleetSize; i++ {
		agents = append(agents, fleetUser(i))
	}
	agents = append(agents, goneUser, apfUser, slowUser, otlpUser, kubeletUser, probeUser, sigUser, localUser, identUser)
	os.Exit(controlplane.Main(m, controlplane.MainOptions{
		Options: controlplane.Options{Users: []string{hogUser, norbac}, Audit: true},
		Agents:  agents,
		Keep:    &cp,
		Setup: func(ctx context.Context, _ *controlplane.ControlPlane) (err error) {
			// The agents log through slog; client-go's klog and the OTel
			// SDK's global error handler would repeat every expected failure.
			klog.LogToStderr(false)
			klog.SetOutput(io.Discard)
			otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
			admin, closeAdmin = ownedClient(cp.AdminConfig())
			cluster, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: fleetSize, PodsPerNode: 3, Namespaces: 3, NodePrefix: "fault-node"})
			return err
		},
	}))
}

// ownedClient is an unthrottled clientset on a transport the test owns, so
// that its connections can be closed before a leak check.
func ownedClient(c *rest.Config) (kubernetes.Interface, func()) {
	c = rest.CopyConfig(c)
	c.QPS, c.Burst = -1, 0
	tlsCfg, err := rest.TLSConfigFor(c)
	if err != nil {
		panic(err)
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, Proxy: http.ProxyFromEnvironment}
	c.TLSClientConfig = rest.TLSClientConfig{}
	c.Transport = tr
	return kubernetes.NewForConfigOrDie(c), tr.CloseIdleConnections
}

// rigOptions shape one in-process agent.
type rigOptions struct {
	viaProxy  bool // reach the apiserver through a proxy the test owns
	fleetQPS  float64
	fleetSize int
	mutate    func(*agent.Config)
	limiter   func(*limiter.Config)
	// exportTimeout bounds one collect-and-export (default 3 s).
	exportTimeout time.Duration
}

// rig is one in-process agent (agentrig) whose kubelet sits behind a proxy,
// so it can go down and come back on the same address, and optionally whose
// apiserver does too.
type rig struct {
	*agentrig.Rig
	kproxy   *proxy
	apiProxy *proxy
}

func newRig(t *testing.T, user, node string, o rigOptions) *rig {
	t.Helper()
	r := &rig{}
	ao := agentrig.Options{CP: cp, Node: node, User: user, Limiter: o.limiter, ExportTimeout: o.exportTimeout,
		KubeletURL: func(u string) string {
			r.kproxy = startProxy(t, strings.TrimPrefix(u, "http://"))
			return "http://" + r.kproxy.Addr()
		},
		Config: func(c *agent.Config) {
			if o.fleetQPS != 0 {
				c.FleetQPS, c.FleetSize = o.fleetQPS, o.fleetSize
			}
			if o.mutate != nil {
				o.mutate(c)
			}
		},
	}
	if o.viaProxy {
		r.apiProxy = startProxy(t, strings.TrimPrefix(cp.URL(), "https://"))
		ao.RESTConfig = cp.UserConfig(user)
		ao.RESTConfig.Host = "https://" + r.apiProxy.Addr()
	}
	r.Rig = agentrig.New(t, ao)
	return r
}

// startKubelet starts a stand-in kubelet serving the summary fixture,
// closed when t ends: as recorded when pods is nil, else re-keyed to pods
// (see fakekubelet.StartForPods); named node when node is not empty.
func startKubelet(t *testing.T, node string, pods []corev1.Pod) *fakekubelet.Server {
	t.Helper()
	var kub *fakekubelet.Server
	var err error
	if pods == nil {
		kub, err = fakekubelet.Start(summary, node)
	} else {
		kub, err = fakekubelet.StartForPods(summary, node, pods)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kub.Close)
	return kub
}

// start starts the agent, which t's cleanup stops (agentrig), and waits
// until its informers sync.
func (r *rig) start(t *testing.T) {
	t.Helper()
	r.Start(t)
	waitFor(t, 60*time.Second, "the agent syncs", func() bool { return r.Agent.Informers().HasSynced() })
}

func hasMetric(name string) func([]otlpreceiver.Point) bool {
	return func(pts []otlpreceiver.Point) bool { return len(otlpreceiver.Find(pts, name, nil)) > 0 }
}

// waitFor polls cond every 100ms; it fails the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	agentrig.WaitFor(t, within, what, cond)
}

// liveHeap is the live heap after a full GC, in MiB: the lowest of five
// readings 500 ms apart. What a fault makes the agent keep stays in every
// reading; the buffers of exports in flight at one instant do not (30
// agents' gRPC buffers and gzip writers, which once read as 65 MiB against
// the usual 19 on a loaded machine).
func liveHeap() float64 {
	low := math.Inf(1)
	for i := range 5 {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		low = min(low, float64(m.HeapAlloc)/(1<<20))
	}
	return low
}

// checkHeap fails when the live heap grew by more than the allowance over
// the baseline: a fault that makes the agent buffer without bound (queued
// exports, retained responses, leaked watches) shows here.
func checkHeap(t *testing.T, what string, base, now, allowMiB float64) {
	t.Helper()
	t.Logf("live heap %s: %.1f MiB (baseline %.1f MiB)", what, now, base)
	if now > base+allowMiB {
		f, err := os.CreateTemp("", "faultsuite-heap-*.pprof")
		if err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
			t.Logf("heap profile: %s", f.Name())
		}
		t.Errorf("live heap %s grew to %.1f MiB from %.1f MiB (allowed +%.0f MiB)", what, now, base, allowMiB)
	}
}

// checkLeaksAtEnd registers the leak check as the test's last cleanup, so
// that it runs after the agents, receivers, kubelets and proxies stopped.
func checkLeaksAtEnd(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { noLeaks(t, before) })
}

// noLeaks checks, after the test's agents are shut down, that none of
// their goroutines is left. Connections of the test's own clients and the
// control plane's process waiters may outlive the agents.
func noLeaks(t *testing.T, before goleak.Option) {
	t.Helper()
	closeAdmin()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	ignore := append(leakcheck.PooledConnections(), before,
		goleak.IgnoreAnyFunction("github.com/fleetagent/fleetagent/internal/testenv/proc.Start.func1"))
	if err := leakcheck.Find(ignore...); err != nil {
		t.Errorf("goroutines left after the agents stopped: %v", err)
	}
}

// rateReport is what the audit log says about a set of users' requests
// in a window.
type rateReport struct {
	Total     int
	Window    time.Duration
	MaxPerSec int // most requests in any 1 s sliding window
	Max5s     int // most requests in any 5 s sliding window
	ByVerb    map[string]int
	EmptyRV   int // LISTs with resourceVersion="" (etcd reads)
}

// auditRate reads the audit log for requests by users matching user in
// [from, to).
func auditRate(t *testing.T, from, to time.Time, match func(user string) bool) rateReport {
	t.Helper()
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	rep := rateReport{Window: to.Sub(from), ByVerb: map[string]int{}}
	var ts []time.Time
	for _, e := range events {
		at := e.RequestReceivedTimestamp
		if !match(e.User.Username) || at.Before(from) || !at.Before(to) {
			continue
		}
		ts = append(ts, at)
		rep.ByVerb[e.Verb]++
		if e.Verb == "list" && e.Query().Get("resourceVersion") == "" && e.Query().Get("watch") == "" {
			rep.EmptyRV++
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	rep.Total = len(ts)
	rep.MaxPerSec = maxInWindow(ts, time.Second)
	rep.Max5s = maxInWindow(ts, 5*time.Second)
	return rep
}

func maxInWindow(ts []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		if n := i - j + 1; n > best {
			best = n
		}
	}
	return best
}

// checkBudget asserts the token-bucket bound on the audit log: in any
// window of length w the fleet may send at most qps×w + agents×burst.
func checkBudget(t *testing.T, what string, rep rateReport, qps float64, agents, burst int) {
	t.Helper()
	bound := func(w time.Duration) float64 { return qps*w.Seconds() + float64(agents*burst) }
	t.Logf("%s: %d requests in %v (%v), max %d in 1 s (bound %.0f), max %d in 5 s (bound %.0f), empty-RV lists %d",
		what, rep.Total, rep.Window.Round(time.Millisecond), rep.ByVerb, rep.MaxPerSec, bound(time.Second), rep.Max5s, bound(5*time.Second), rep.EmptyRV)
	if float64(rep.MaxPerSec) > bound(time.Second) {
		t.Errorf("%s: %d requests in one second, above the budget's %.0f", what, rep.MaxPerSec, bound(time.Second))
	}
	if float64(rep.Max5s) > bound(5*time.Second) {
		t.Errorf("%s: %d requests in five seconds, above the budget's %.0f", what, rep.Max5s, bound(5*time.Second))
	}
	if float64(rep.Total) > bound(rep.Window) {
		t.Errorf("%s: %d requests in %v, above the budget's %.0f", what, rep.Total, rep.Window, bound(rep.Window))
	}
}

func newPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
}

func createPod(t *testing.T, name, node string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := admin.CoreV1().Pods("default").Create(ctx, newPod(name, node), metav1.CreateOptions{})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("create pod %s on %s: %v", name, node, err)
		}
		time.Sleep(200 * time.Millisecond) // the apiserver may still be coming up
	}
}

func hasPod(a *agent.Agent, name string) bool {
	for _, p := range a.Informers().Pods() {
		if p.Name == name && p.Namespace == "default" {
			return true
		}
	}
	return false
}

// waitRBAC waits until a restarted apiserver authorizes agent users again
// (it passes /readyz before its RBAC cache has synced).
func waitRBAC(t *testing.T, node string) {
	t.Helper()
	cs, closeCS := ownedClient(cp.UserConfig(probeUser))
	defer closeCS()
	waitFor(t, 60*time.Second, "the restarted apiserver authorizes agents", func() bool {
		_, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, ResourceVersion: "0"})
		return err == nil
	})
}

// adminMetric sums the samples of a self-metric on the agent's /metrics
// whose name starts with prefix and whose labels contain every label.
func adminMetric(t *testing.T, a *agent.Agent, prefix string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}
