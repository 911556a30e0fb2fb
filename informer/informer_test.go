package informer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
	"github.com/fleetagent/fleetagent/internal/testenv/metricsread"
)

// startInformers starts informers for node as user and stops them when
// the test ends.
func startInformers(t *testing.T, cfg *rest.Config, opts Options) *Informers {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	inf, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := inf.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	if err := inf.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return inf
}

// truth is what the apiserver says is on node, as namespace/name -> uid.
func truth(ctx context.Context, t *testing.T, node string) map[string]string {
	t.Helper()
	list, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range list.Items {
		out[p.Namespace+"/"+p.Name] = string(p.UID) + "@" + p.ResourceVersion
	}
	return out
}

func cached(inf *Informers) map[string]string {
	out := map[string]string{}
	for _, p := range inf.Pods() {
		out[p.Namespace+"/"+p.Name] = string(p.UID) + "@" + p.ResourceVersion
	}
	return out
}

// waitCacheMatches polls until the cache holds exactly the pods the
// apiserver has on node, at the same resourceVersions.
func waitCacheMatches(ctx context.Context, t *testing.T, inf *Informers, node string) {
	t.Helper()
	var want, got map[string]string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		want, got = truth(ctx, t, node), cached(inf)
		return fmt.Sprint(want) == fmt.Sprint(got), nil
	})
	if err != nil {
		t.Fatalf("cache of %s never matched the apiserver: %v\nwant %v\ngot  %v\nlast error: %v", node, err, want, got, inf.LastError())
	}
}

func testPod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:1", Env: []corev1.EnvVar{{Name: "A", Value: "b"}}}},
		},
	}
}

// deletePod deletes a pod at once (no kubelet runs to finish a graceful
// deletion).
func deletePod(ctx context.Context, t *testing.T, ns, name string) {
	t.Helper()
	err := admin.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

func createPod(ctx context.Context, t *testing.T, p *corev1.Pod) {
	t.Helper()
	if _, err := admin.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// recorder is a pod event handler that remembers what it was told.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(kind string, obj any) {
	key, _ := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, kind+" "+key)
}

func (r *recorder) has(e string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.events, e)
}

func (r *recorder) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.add("add", obj) },
		UpdateFunc: func(_, obj any) { r.add("update", obj) },
		DeleteFunc: func(obj any) { r.add("delete", obj) },
	}
}

func waitEvents(ctx context.Context, t *testing.T, r *recorder, want ...string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		for _, e := range want {
			if !r.has(e) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		t.Fatalf("pod handler never saw %v; saw %v", want, r.events)
	}
}

// TestNodeScope runs one agent's informers through start, steady state,
// churn on its own node and others, rescheduling, and two apiserver
// restarts (graceful and crash), and checks that the cache holds exactly
// the node's pods throughout and that every request the agent made is
// node-scoped and served without an empty resourceVersion.
func TestNodeScope(t *testing.T) {
	ctx := context.Background()
	nodes := sim.NodeNames()
	node, other := nodes[7], nodes[8]
	gate := &gate{}
	cfg := cp.UserConfig(agentScope)
	cfg.WrapTransport = gate.wrap
	inf := startInformers(t, cfg, Options{NodeName: node})
	rec := &recorder{}
	if _, err := inf.AddPodHandler(rec.handler()); err != nil {
		t.Fatal(err)
	}
	if err := inf.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(inf.Pods()); got != simPodsPerNode {
		t.Errorf("after sync the cache holds %d pods, want the node's %d", got, simPodsPerNode)
	}
	waitCacheMatches(ctx, t, inf, node)
	n, ok := inf.Node()
	if !ok || n.Name != node {
		t.Fatalf("Node() = %v, %v; want %s", n, ok, node)
	}
	if n.ManagedFields != nil {
		t.Error("cached Node still has managedFields: transform not applied")
	}
	for _, p := range inf.Pods() {
		if p.Spec.NodeName != node || p.ManagedFields != nil {
			t.Fatalf("cached pod %s/%s: nodeName %q, managedFields %d", p.Namespace, p.Name, p.Spec.NodeName, len(p.ManagedFields))
		}
	}

	t.Run("churn", func(t *testing.T) {
		// Add, update and delete on this node.
		createPod(ctx, t, testPod("mine", node, map[string]string{"v": "1"}))
		p, err := admin.CoreV1().Pods(testNamespace).Get(ctx, "mine", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Labels["v"] = "2"
		if _, err := admin.CoreV1().Pods(testNamespace).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		simPod := inf.Pods()[0]
		deletePod(ctx, t, simPod.Namespace, simPod.Name)
		// Churn elsewhere, which this node's cache must never see.
		createPod(ctx, t, testPod("elsewhere", other, nil))
		// Rescheduling: a pod cannot change spec.nodeName, so a pod moves by
		// being deleted and recreated with the same name on another node.
		createPod(ctx, t, testPod("mover-in", other, nil))
		createPod(ctx, t, testPod("mover-out", node, nil))
		waitEvents(ctx, t, rec, "add "+testNamespace+"/mover-out")
		deletePod(ctx, t, testNamespace, "mover-in")
		createPod(ctx, t, testPod("mover-in", node, nil))
		deletePod(ctx, t, testNamespace, "mover-out")
		createPod(ctx, t, testPod("mover-out", other, nil))

		waitCacheMatches(ctx, t, inf, node)
		waitEvents(ctx, t, rec,
			"add "+testNamespace+"/mine", "update "+testNamespace+"/mine",
			"delete "+simPod.Namespace+"/"+simPod.Name,
			"add "+testNamespace+"/mover-in", "delete "+testNamespace+"/mover-out")
		if rec.has("add " + testNamespace + "/elsewhere") {
			t.Error("the pod handler saw a pod of another node")
		}
		got := cached(inf)
		if _, ok := got[testNamespace+"/mover-out"]; ok {
			t.Error("a pod rescheduled away is still cached")
		}
		if _, ok := got[testNamespace+"/mover-in"]; !ok {
			t.Error("a pod rescheduled here is not cached")
		}
	})

	// A graceful restart, as in a control-plane upgrade. Observed on
	// v1.37.2: the restarted apiserver passes /readyz before its RBAC
	// authorizer has synced, so the agent's resumed watch is refused with
	// 403 for a moment; the reflector then relists from its last
	// resourceVersion, which the watch cache serves (no etcd read).
	t.Run("graceful-restart", func(t *testing.T) {
		rvBefore := inf.pods.LastSyncResourceVersion()
		before := inf.Stats()
		since := time.Now()
		if err := cp.RestartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		createPod(ctx, t, testPod("after-restart", node, nil))
		waitCacheMatches(ctx, t, inf, node)
		after := inf.Stats()
		trail := podTrail(t, since)
		t.Logf("stats before %+v, after %+v; pod requests after restart (last RV before: %s): %v", before.Pods, after.Pods, rvBefore, trail)
		if len(trail) == 0 || !strings.HasPrefix(trail[0], "watch rv="+rvBefore+" ") {
			t.Errorf("first pod request after restart: %v; want a watch from the last resourceVersion %s", trail, rvBefore)
		}
		if after.Pods.Lists > before.Pods.Lists && after.Pods.Relists != before.Pods.Relists+(after.Pods.Lists-before.Pods.Lists) {
			t.Errorf("lists after the first were not counted as relists: %+v", after.Pods)
		}
		waitHealthy(ctx, t, inf)
	})

	// 410 Gone: the agent is cut off while the apiserver crashes and
	// restarts and while pods change on other nodes. The restarted watch
	// cache starts after the agent's last resourceVersion, so the agent's
	// watch from it gets 410 Gone; the agent must relist from that
	// resourceVersion (served by the cache, never resourceVersion="") and
	// watch on. The gate keeps the agent out until the apiserver's RBAC
	// answers, so the 410, not a 403, is what it meets first.
	t.Run("gone-after-crash", func(t *testing.T) {
		// A watch the restarted apiserver closed within a second, before
		// any event, makes the reflector relist after a backoff: let that
		// relist happen before the crash, or it lands in the trail below.
		waitWatchesSettled(ctx, t, inf)
		gate.close()
		created, err := admin.CoreV1().Pods(testNamespace).Create(ctx, testPod("during-crash", other, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.KillAPIServer(); err != nil {
			t.Fatal(err)
		}
		rvBefore := inf.pods.LastSyncResourceVersion()
		if rv, _ := strconv.ParseUint(rvBefore, 10, 64); rv >= mustRV(t, created.ResourceVersion) {
			t.Fatalf("precondition: the agent's resourceVersion %s reached the write elsewhere (a bookmark arrived in between): rerun", rvBefore)
		}
		before := inf.Stats()
		since := time.Now()
		if err := cp.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		waitRBACReady(ctx, t, node)
		gate.open()
		createPod(ctx, t, testPod("after-crash", node, nil))
		waitCacheMatches(ctx, t, inf, node)
		after := inf.Stats()
		trail := podTrail(t, since)
		t.Logf("stats before %+v, after %+v; pod requests after restart (last RV before: %s): %v", before.Pods, after.Pods, rvBefore, trail)
		// The 410 comes as an error event on a watch that opened with 200.
		want := []string{"watch rv=" + rvBefore + " code=200", "list rv=" + rvBefore + " code=200"}
		if len(trail) < 3 || trail[0] != want[0] || trail[1] != want[1] || !strings.HasPrefix(trail[2], "watch rv=") {
			t.Errorf("pod requests after the crash: %v; want %v then a watch", trail, want)
		}
		if after.Pods.Expired != before.Pods.Expired+1 || after.Pods.Relists != before.Pods.Relists+1 {
			t.Errorf("stats before %+v, after %+v: want one 410 Gone and one relist", before.Pods, after.Pods)
		}
		waitHealthy(ctx, t, inf)
	})

	t.Run("audit", func(t *testing.T) {
		events, err := cp.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		mine := controlplane.UserEvents(events, agentScope)
		if len(mine) == 0 {
			t.Fatal("no audit events for the agent")
		}
		checkNodeScoped(t, mine, node)
		s := inf.Stats()
		var lists, watches int64
		for _, e := range mine {
			switch e.Verb {
			case "list":
				lists++
			case "watch":
				watches++
			}
		}
		// Requests refused while the apiserver was down are counted but
		// never audited.
		if tot := s.Total(); tot.Lists < lists || tot.Watches < watches {
			t.Errorf("Stats counted %d lists and %d watches, fewer than the audit log's %d and %d", tot.Lists, tot.Watches, lists, watches)
		}
		if s.Pods.Events == 0 || s.Pods.Objects != int64(len(truth(ctx, t, node))) || s.Node.Objects != 1 {
			t.Errorf("Stats = %+v", s)
		}
	})
}

// checkNodeScoped fails on any request that is not a LIST or WATCH of this
// node's pods or Node, on any LIST or WATCH with an empty resourceVersion,
// and on any watch without bookmarks. The first list of each resource must
// be resourceVersion=0.
func checkNodeScoped(t *testing.T, events []controlplane.AuditEvent, node string) {
	t.Helper()
	want := map[string]string{"pods": "spec.nodeName=" + node, "nodes": "metadata.name=" + node}
	firstList := map[string]bool{}
	for _, e := range events {
		q := e.Query()
		desc := fmt.Sprintf("%s %s", e.Verb, e.RequestURI)
		if e.Verb != "list" && e.Verb != "watch" {
			t.Errorf("request that is neither LIST nor WATCH: %s", desc)
			continue
		}
		sel, ok := want[e.Resource()]
		if !ok {
			t.Errorf("request for a resource other than pods and nodes: %s", desc)
			continue
		}
		if q.Get("fieldSelector") != sel {
			t.Errorf("request without the node's field selector %q: %s", sel, desc)
		}
		rv := q.Get("resourceVersion")
		if rv == "" {
			t.Errorf("request with an empty resourceVersion (an etcd read): %s", desc)
		}
		if e.Verb == "watch" && q.Get("allowWatchBookmarks") != "true" {
			t.Errorf("watch without bookmarks: %s", desc)
		}
		if e.Verb == "list" && !firstList[e.Resource()] {
			firstList[e.Resource()] = true
			if rv != "0" {
				t.Errorf("first list of %s has resourceVersion %q, want 0 (watch cache): %s", e.Resource(), rv, desc)
			}
		}
	}
}

// TestWatchListMode checks the streaming-list option end to end: same
// cache, and the audit log shows the streaming list with the selector.
func TestWatchListMode(t *testing.T) {
	ctx := context.Background()
	node := sim.NodeNames()[11]
	inf := startInformers(t, cp.UserConfig(agentWatchList), Options{NodeName: node, Mode: ModeWatchList})
	if err := inf.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	waitCacheMatches(ctx, t, inf, node)
	s := inf.Stats()
	if s.Pods.Lists != 1 || s.Pods.Relists != 0 || s.Pods.Events < simPodsPerNode {
		t.Errorf("pod stats after a streaming list = %+v, want 1 list and >= %d events", s.Pods, simPodsPerNode)
	}
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	var streaming int
	for _, e := range controlplane.UserEvents(events, agentWatchList) {
		q := e.Query()
		if e.Verb == "list" {
			t.Errorf("LIST in watch-list mode: %s", e.RequestURI)
		}
		if e.Resource() == "pods" && q.Get("fieldSelector") != "spec.nodeName="+node {
			t.Errorf("pod request without the node's selector: %s", e.RequestURI)
		}
		if q.Get("sendInitialEvents") == "true" {
			streaming++
		}
	}
	if streaming != 2 {
		t.Errorf("%d streaming lists in the audit log, want 2 (pods and nodes)", streaming)
	}
}

// TestWaitForSyncWithoutRBAC: an agent whose service account lacks RBAC
// must get a clear error from WaitForSync within SyncTimeout, not a hang.
func TestWaitForSyncWithoutRBAC(t *testing.T) {
	inf := startInformers(t, cp.UserConfig(agentNoRBAC), Options{NodeName: sim.NodeNames()[0], SyncTimeout: 3 * time.Second})
	err := inf.WaitForSync(context.Background())
	if err == nil {
		t.Fatal("WaitForSync succeeded without RBAC")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !apierrors.IsForbidden(err) {
		t.Errorf("WaitForSync error should wrap the deadline and the 403: %v", err)
	}
	for _, want := range []string{"pods of node", "nodes of node", "forbidden", "get, list and watch pods and nodes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WaitForSync error lacks %q: %v", want, err)
		}
	}
	if inf.HasSynced() {
		t.Error("HasSynced without RBAC")
	}
	if !apierrors.IsForbidden(inf.LastError()) {
		t.Errorf("LastError = %v, want the 403", inf.LastError())
	}
	if s := inf.Stats().Total(); s.ListErrors == 0 || s.Lists < s.ListErrors {
		t.Errorf("Stats = %+v, want the failed lists counted", s)
	}
}

// headerRecorder stands in for the limiter's WrapTransport: it must stay in
// the request path, and it sees what the informer asks for.
type headerRecorder struct {
	mu     sync.Mutex
	accept []string
	next   http.RoundTripper
}

func (h *headerRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.accept = append(h.accept, r.Header.Get("Accept"))
	h.mu.Unlock()
	return h.next.RoundTrip(r)
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	cfg := cp.UserConfig(agentLifecycle)
	node := sim.NodeNames()[3]

	t.Run("invalid options", func(t *testing.T) {
		for _, tc := range []struct {
			cfg  *rest.Config
			opts Options
		}{
			{nil, Options{NodeName: node}},
			{cfg, Options{}},
			{cfg, Options{NodeName: node, Mode: "both"}},
		} {
			if _, err := New(tc.cfg, tc.opts); err == nil {
				t.Errorf("New(%v, %+v) succeeded", tc.cfg != nil, tc.opts)
			}
		}
	})

	t.Run("shutdown without start", func(t *testing.T) {
		inf, err := New(cfg, Options{NodeName: node, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := inf.WaitForSync(ctx); err == nil {
			t.Error("WaitForSync before Start succeeded")
		}
		for range 2 {
			if err := inf.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := inf.Start(ctx); err == nil {
			t.Error("Start after Shutdown succeeded")
		}
		if len(inf.Pods()) != 0 || inf.HasSynced() || inf.Watching() || inf.LastError() != nil {
			t.Error("an informer never started has state")
		}
	})

	t.Run("no goroutine outlives shutdown", func(t *testing.T) {
		// Connections belong to client-go's shared transport cache and
		// outlive any one client; everything else must be gone.
		defer goleak.VerifyNone(t, append(leakcheck.PooledConnections(), goleak.IgnoreCurrent(),
			goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"))...)
		inf, err := New(cfg, Options{NodeName: node, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := inf.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := inf.WaitForSync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := inf.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("start run shutdown", func(t *testing.T) {
		rec := &headerRecorder{}
		c := rest.CopyConfig(cfg)
		c.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec }
		inf, err := New(c, Options{NodeName: node, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		startCtx, cancel := context.WithCancel(ctx)
		if err := inf.Start(startCtx); err != nil {
			t.Fatal(err)
		}
		cancel() // the start context ending must not stop the informers
		if err := inf.Start(ctx); err == nil {
			t.Error("second Start succeeded")
		}
		if err := inf.WaitForSync(ctx); err != nil {
			t.Fatal(err)
		}
		if len(inf.Pods()) != simPodsPerNode {
			t.Errorf("%d pods cached, want %d", len(inf.Pods()), simPodsPerNode)
		}
		// Synced and then following: both watches open.
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return inf.Watching(), nil
		}); err != nil {
			t.Errorf("Watching() never true after sync: %v", err)
		}
		for range 2 {
			if err := inf.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if inf.Watching() {
			t.Error("Watching() after Shutdown: the watches' streams are closed")
		}
		checkMetrics(t, inf)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.accept) == 0 {
			t.Fatal("the configured WrapTransport saw no request: it was replaced")
		}
		for _, a := range rec.accept {
			if !strings.HasPrefix(a, "application/vnd.kubernetes.protobuf") {
				t.Errorf("request accepts %q, want protobuf first", a)
			}
		}
	})
}

// checkMetrics collects the registered instruments through the OTel SDK and
// compares them with Stats.
func checkMetrics(t *testing.T, inf *Informers) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	if err := inf.RegisterMetrics(mp.Meter("informer-test")); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, m := range metricsread.Collect(t, reader) {
		var points []metricdata.DataPoint[int64]
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			points = d.DataPoints
		case metricdata.Gauge[int64]:
			points = d.DataPoints
		}
		for _, p := range points {
			r, _ := p.Attributes.Value("k8s.resource")
			got[m.Name+"/"+r.AsString()] = p.Value
		}
	}
	s := inf.Stats()
	want := map[string]int64{
		"fleetagent.informer.lists/pods":    s.Pods.Lists,
		"fleetagent.informer.watches/pods":  s.Pods.Watches,
		"fleetagent.informer.events/pods":   s.Pods.Events,
		"fleetagent.informer.objects/pods":  s.Pods.Objects,
		"fleetagent.informer.lists/nodes":   s.Node.Lists,
		"fleetagent.informer.objects/nodes": s.Node.Objects,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("metric %s = %d, Stats says %d", k, got[k], v)
		}
	}
	if len(got) != 18 {
		t.Errorf("%d metric streams, want 9 instruments x 2 resources: %v", len(got), got)
	}
}

// gate stands between the agent and the apiserver: closed, it refuses new
// connections as a down apiserver would (the reflector retries a refused
// watch from the same resourceVersion).
type gate struct {
	closed atomic.Bool
	next   http.RoundTripper
}

func (g *gate) wrap(rt http.RoundTripper) http.RoundTripper { g.next = rt; return g }
func (g *gate) close()                                      { g.closed.Store(true) }
func (g *gate) open()                                       { g.closed.Store(false) }

func (g *gate) RoundTrip(r *http.Request) (*http.Response, error) {
	if g.closed.Load() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	return g.next.RoundTrip(r)
}

// waitRBACReady polls, as a user with the agent's RBAC, until the
// restarted apiserver authorizes the agent's list.
func waitRBACReady(ctx context.Context, t *testing.T, node string) {
	t.Helper()
	probe := kubernetes.NewForConfigOrDie(cp.UserConfig(agentProbe))
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := probe.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, ResourceVersion: "0"})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("RBAC never became ready after the restart: %v", err)
	}
}

// podTrail is the agent's pod requests since a time, from the audit log.
func podTrail(t *testing.T, since time.Time) []string {
	t.Helper()
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, e := range controlplane.UserEvents(events, agentScope) {
		if e.RequestReceivedTimestamp.Before(since) || e.Resource() != "pods" {
			continue
		}
		trail = append(trail, fmt.Sprintf("%s rv=%s code=%d", e.Verb, e.Query().Get("resourceVersion"), e.Code()))
	}
	return trail
}

func mustRV(t *testing.T, rv string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", rv, err)
	}
	return n
}

// waitHealthy polls until LastError clears: after a restart each informer
// recovers on its own backoff.
// waitWatchesSettled waits until the informers have made no list and
// opened no watch for three seconds: past the reflector's relist backoff
// (0.8 to 1.6 s after a very short watch), so the next request either
// makes is caused by what the test does next.
func waitWatchesSettled(ctx context.Context, t *testing.T, inf *Informers) {
	t.Helper()
	const quiet = 3 * time.Second
	count := func() [4]int64 {
		s := inf.Stats()
		return [4]int64{s.Pods.Lists, s.Pods.Watches, s.Node.Lists, s.Node.Watches}
	}
	last, since := count(), time.Now()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if c := count(); c != last {
			last, since = c, time.Now()
		}
		return time.Since(since) >= quiet, nil
	})
	if err != nil {
		t.Fatalf("the informers kept listing or watching for a minute: %+v", inf.Stats())
	}
}

func waitHealthy(ctx context.Context, t *testing.T, inf *Informers) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return inf.LastError() == nil, nil
	})
	if err != nil {
		t.Errorf("LastError never cleared after recovery: %v", inf.LastError())
	}
}
