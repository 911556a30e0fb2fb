package limiter_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/limiter"
)

const fleetAgents = 200

var cp *controlplane.ControlPlane

func fleetUser(i int) string { return fmt.Sprintf("fleet-%03d", i) }

// TestMain starts one control plane for every integration test here: 200
// fleet users plus one user per other test, each with exactly the agent's
// RBAC from deploy/base/rbac.yaml, and the user whose LIST holds an APF
// seat (controlplane.HoldSeat grants it what it reads).
func TestMain(m *testing.M) {
	agents := []string{"apf-agent", "kill-agent", "disc-agent", "down-agent"}
	for i := 0; i < fleetAgents; i++ {
		agents = append(agents, fleetUser(i))
	}
	os.Exit(controlplane.Main(m, controlplane.MainOptions{
		Options: controlplane.Options{Users: []string{"apf-hog"}, Audit: true},
		Agents:  agents,
		Keep:    &cp,
	}))
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// userEvents is the audit log's requests by user received in [from, to).
func userEvents(t *testing.T, user string, from, to time.Time) []controlplane.AuditEvent {
	t.Helper()
	evs, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	var out []controlplane.AuditEvent
	for _, e := range evs {
		if e.HasUserPrefix(user) && !e.RequestReceivedTimestamp.Before(from) && e.RequestReceivedTimestamp.Before(to) {
			out = append(out, e)
		}
	}
	return out
}

// maxInWindow is the largest number of events received within any window
// [t, t+w).
func maxInWindow(evs []controlplane.AuditEvent, w time.Duration) int {
	ts := make([]time.Time, len(evs))
	for i, e := range evs {
		ts[i] = e.RequestReceivedTimestamp
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for j < len(ts) && ts[j].Sub(ts[i]) < w {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

// sendLog records, below the budget, when each request was sent and what
// came back.
type sendLog struct {
	mu      sync.Mutex
	entries []sendEntry
}

type sendEntry struct {
	sent, answered time.Time
	code           int
	retryAfter     time.Duration
}

func (l *sendLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		e := sendEntry{sent: time.Now()}
		resp, err := rt.RoundTrip(req)
		e.answered = time.Now()
		if err == nil {
			e.code = resp.StatusCode
			if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil {
				e.retryAfter = time.Duration(s) * time.Second
			}
		}
		l.mu.Lock()
		l.entries = append(l.entries, e)
		l.mu.Unlock()
		return resp, err
	})
}

func (l *sendLog) snapshot() []sendEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sendEntry(nil), l.entries...)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// listLoop lists the node's pods as fast as the budget allows until ctx
// ends: a client that always wants more than its share.
func listLoop(ctx context.Context, cs kubernetes.Interface, node string) {
	for ctx.Err() == nil {
		_, _ = cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, ResourceVersion: "0"})
	}
}

// TestAPFRejection puts the agent's user into a priority level with no
// seats, so the apiserver answers 429 with Retry-After. The agent must
// stay within its budget throughout (audit log), wait at least
// Retry-After after every 429, open its breaker, and recover once the
// FlowSchema is deleted.
func TestAPFRejection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const user, qps, burst = "apf-agent", 4.0, 2

	b, err := limiter.New(limiter.Config{FleetQPS: qps, FleetSize: 1, Burst: burst,
		InitialBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second, BreakerThreshold: 3, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var sends sendLog
	cfg := cp.UserConfig(user)
	cfg.Wrap(sends.wrap) // innermost: sees what actually goes out
	b.Instrument(cfg)
	cs := kubernetes.NewForConfigOrDie(cfg)
	start := time.Now()
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); listLoop(loopCtx, cs, "apf-node") }()
	defer func() { stopLoop(); <-loopDone }()

	// Phase 1: unthrottled, the loop runs at the budget.
	time.Sleep(3 * time.Second)

	// Phase 2: reject everything the agent sends.
	lift, err := cp.RejectUsers(ctx, "fleetagent-test-reject-agent", user, "apf-hog")
	if err != nil {
		t.Fatal(err)
	}
	defer lift(context.Background())
	// A priority level with no seats still admits a request when nothing
	// else executes in it (so that one big request is not starved), so an
	// agent sending one request at a time would never be rejected. A hog
	// in the same level holds the level busy: it lists a large collection
	// and does not read the response, so its handler blocks writing.
	releaseHog, err := cp.HoldSeat(ctx, "apf-hog", "apf-hog")
	if err != nil {
		t.Fatal(err)
	}
	defer releaseHog()
	rejectStart := time.Now()
	for b.Stats().BreakerOpens == 0 {
		if time.Since(rejectStart) > 30*time.Second {
			fams, err := cp.Metrics(ctx)
			for _, name := range []string{"apiserver_flowcontrol_dispatched_requests_total", "apiserver_flowcontrol_rejected_requests_total", "apiserver_flowcontrol_current_executing_seats", "apiserver_flowcontrol_nominal_limit_seats"} {
				if f := fams[name]; f != nil {
					for _, m := range f.Metric {
						t.Logf("%s %v %v %v", name, m.GetLabel(), m.GetCounter().GetValue(), m.GetGauge().GetValue())
					}
				}
			}
			t.Fatalf("breaker never opened under APF rejection (metrics err %v); stats %+v", err, b.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if deg, why := b.Degraded(); !deg {
		t.Errorf("Degraded() = false with the breaker open (%q)", why)
	}
	time.Sleep(5 * time.Second)

	// Phase 3: lift the limit; the agent recovers on its own.
	releaseHog()
	lifted := time.Now()
	if err := lift(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		s := b.Stats()
		if s.Breaker == limiter.BreakerClosed && s.Requests["list 200"] > 0 && lastCode(sends.snapshot()) == 200 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("agent did not recover after the FlowSchema was deleted; stats %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	recovered := time.Now()
	time.Sleep(2 * time.Second)
	stopLoop()
	<-loopDone
	end := time.Now()
	t.Logf("recovered %v after the FlowSchema was deleted", recovered.Sub(lifted).Round(time.Millisecond))

	s := b.Stats()
	if s.Throttled == 0 || s.LastRetryAfter < time.Second {
		t.Errorf("no 429 with Retry-After seen: throttled %d, last Retry-After %v", s.Throttled, s.LastRetryAfter)
	}
	if deg, why := b.Degraded(); deg {
		t.Errorf("still degraded after recovery: %s", why)
	}

	// Retry-After honoured: after a 429 answered at time a with
	// Retry-After r, nothing is sent before a+r.
	entries := sends.snapshot()
	sort.Slice(entries, func(i, j int) bool { return entries[i].sent.Before(entries[j].sent) })
	throttled := 0
	for _, e := range entries {
		if e.code != http.StatusTooManyRequests {
			continue
		}
		throttled++
		for _, n := range entries {
			if n.sent.After(e.answered) && n.sent.Before(e.answered.Add(e.retryAfter)) {
				t.Errorf("request sent %v after a 429 with Retry-After %v", n.sent.Sub(e.answered), e.retryAfter)
			}
		}
	}
	if throttled == 0 {
		t.Error("the apiserver never answered 429: the FlowSchema did not take effect")
	}

	// The request rate at the apiserver never exceeded the budget, in any
	// phase: at most qps*w + burst requests in any window w. Windows are a
	// tenth of a second short of whole token intervals, because the audit
	// log times arrival at the server, not the client's send.
	evs := userEvents(t, user, start, end)
	codes := map[int]int{}
	for _, e := range evs {
		codes[e.Code()]++
	}
	t.Logf("audit: %d requests over %v, by code %v; send log: %d requests, %d answered 429", len(evs), end.Sub(start).Round(time.Second), codes, len(entries), throttled)
	if codes[429] == 0 || codes[200] == 0 {
		t.Errorf("audit log codes %v: want both 200s and 429s", codes)
	}
	for _, w := range []time.Duration{900 * time.Millisecond, 2900 * time.Millisecond, 9900 * time.Millisecond} {
		limit := int(qps*w.Seconds()) + burst
		if got := maxInWindow(evs, w); got > limit {
			t.Errorf("apiserver received %d requests from %s within %v; budget allows %d", got, user, w, limit)
		}
	}
	if total, limit := len(evs), int(qps*end.Sub(start).Seconds())+burst; total > limit {
		t.Errorf("%d requests over the run; budget allows %d", total, limit)
	}
}

func lastCode(es []sendEntry) int {
	if len(es) == 0 {
		return 0
	}
	return es[len(es)-1].code
}

// TestFleetStartTogether starts 200 agents at the same instant, each with
// its own budget for a fleet of 200, each doing what an agent does at
// start: a cache-served LIST of its node's pods, then a WATCH. The fleet's
// combined rate, read from the audit log, stays within the fleet budget
// (plus FleetSize×Burst, the documented allowance, which the start-up
// spread keeps unused).
func TestFleetStartTogether(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const fleetQPS = 100.0
	budgets := make([]*limiter.Budget, fleetAgents)
	clients := make([]kubernetes.Interface, fleetAgents)
	for i := range budgets {
		b, err := limiter.New(limiter.Config{FleetQPS: fleetQPS, FleetSize: fleetAgents, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		cfg := cp.UserConfig(fleetUser(i))
		b.Instrument(cfg)
		budgets[i], clients[i] = b, kubernetes.NewForConfigOrDie(cfg)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, fleetAgents)
	watchCtx, stopWatches := context.WithCancel(ctx)
	defer stopWatches()
	ready := make(chan struct{}, fleetAgents)
	for i := range budgets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := "node-" + strconv.Itoa(i)
			sel := "spec.nodeName=" + node
			list, err := clients[i].CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: "0"})
			if err != nil {
				errs <- fmt.Errorf("%s list: %w", node, err)
				return
			}
			w, err := clients[i].CoreV1().Pods("").Watch(watchCtx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
			if err != nil {
				errs <- fmt.Errorf("%s watch: %w", node, err)
				return
			}
			ready <- struct{}{}
			<-watchCtx.Done()
			w.Stop()
		}()
	}
	for i := 0; i < fleetAgents; i++ {
		select {
		case <-ready:
		case err := <-errs:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("only %d of %d agents started their watch", i, fleetAgents)
		}
	}
	allUp := time.Now()
	stopWatches()
	wg.Wait()

	evs := userEvents(t, "fleet-", start, allUp.Add(time.Second))
	byVerb := map[string]int{}
	for _, e := range evs {
		byVerb[e.Verb]++
	}
	if byVerb["list"] != fleetAgents || byVerb["watch"] != fleetAgents {
		t.Fatalf("audit log has %v, want %d lists and %d watches", byVerb, fleetAgents, fleetAgents)
	}
	burst := budgets[0].Stats().Burst
	t.Logf("%d agents: %d requests in %v (fleet budget %v/s)", fleetAgents, len(evs), allUp.Sub(start).Round(time.Millisecond), fleetQPS)
	for _, w := range []time.Duration{250 * time.Millisecond, time.Second, 2 * time.Second} {
		got := maxInWindow(evs, w)
		budget := fleetQPS * w.Seconds()
		t.Logf("max requests in any %v: %d (fleet budget %.0f, documented bound with burst %.0f)", w, got, budget, budget+float64(fleetAgents*burst))
		if float64(got) > budget+float64(fleetAgents*burst) {
			t.Errorf("fleet sent %d requests within %v; the documented bound is %.0f", got, w, budget+float64(fleetAgents*burst))
		}
		// The spread keeps the burst allowance unused: a uniform spread
		// puts about budget requests in a window; 1.5x is more than 5
		// standard deviations for the 1s and 2s windows.
		if w >= time.Second && float64(got) > 1.5*budget {
			t.Errorf("fleet sent %d requests within %v; a spread start stays near the budget %.0f", got, w, budget)
		}
	}
	// Each request paid exactly once: tokens spent equal requests the
	// apiserver received, client-go's limiter paying for the LISTs and the
	// transport for the WATCHes, whose first attempt client-go does not
	// throttle.
	var inClientGo, inTransport int64
	for _, b := range budgets {
		s := b.Stats()
		inClientGo += s.PaidInClientGo
		inTransport += s.PaidInTransport
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}
	if inClientGo != fleetAgents || inTransport != fleetAgents {
		t.Errorf("tokens paid in client-go %d, in the transport %d; want %d each (one per LIST, one per WATCH)", inClientGo, inTransport, fleetAgents)
	}
}

// TestKillSwitch flips a node-local file while the agent has an open watch
// and keeps listing: the watch ends within the poll interval, nothing
// reaches the apiserver while the switch is on, and traffic resumes after
// it is turned off.
func TestKillSwitch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const user, poll = "kill-agent", 300 * time.Millisecond
	path := filepath.Join(t.TempDir(), "kill-switch")
	if err := os.WriteFile(path, []byte("off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := limiter.New(limiter.Config{FleetQPS: 10, FleetSize: 1, KillSwitchPath: path, KillSwitchPoll: poll, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cp.UserConfig(user)
	b.Instrument(cfg)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	cs := kubernetes.NewForConfigOrDie(cfg)
	w, err := cs.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=kill-node", ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); listLoop(loopCtx, cs, "kill-node") }()
	defer func() { stopLoop(); <-loopDone }()
	time.Sleep(time.Second)

	on := time.Now()
	if err := os.WriteFile(path, []byte("on\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range w.ResultChan() {
		// drain until the kill switch ends the watch
	}
	closedAfter := time.Since(on)
	t.Logf("watch closed %v after the switch was turned on (poll interval %v)", closedAfter.Round(time.Millisecond), poll)
	if closedAfter > poll+2*time.Second {
		t.Errorf("watch closed %v after the switch flipped; poll interval is %v", closedAfter, poll)
	}
	if deg, why := b.Degraded(); !deg {
		t.Errorf("Degraded() = false while killed (%q)", why)
	}
	time.Sleep(3 * time.Second)
	off := time.Now()
	before := b.Stats().Requests["list 200"]
	if err := os.WriteFile(path, []byte("off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for b.Stats().Requests["list 200"] == before {
		if ctx.Err() != nil {
			t.Fatal("no request after the kill switch was turned off")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("traffic resumed %v after the switch was turned off", time.Since(off).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	stopLoop()
	<-loopDone

	// The switch is read every poll interval; after that, silence.
	if evs := userEvents(t, user, on.Add(poll+200*time.Millisecond), off); len(evs) != 0 {
		for _, e := range evs {
			t.Errorf("request while the kill switch was on: %s %s at %v after it flipped", e.Verb, e.RequestURI, e.RequestReceivedTimestamp.Sub(on))
		}
	}
	if len(userEvents(t, user, time.Time{}, on)) == 0 || len(userEvents(t, user, off, time.Now())) == 0 {
		t.Error("audit log lacks requests before the switch was on or after it was off")
	}
	if s := b.Stats(); s.WatchesKilled == 0 || s.KillSwitchFlips != 2 {
		t.Errorf("stats: watches killed %d, flips %d; want ≥1 and 2", s.WatchesKilled, s.KillSwitchFlips)
	}
}

// TestFleetSizeDiscovery reads the fleet size from the agent's own
// DaemonSet with a cache-served GET paid from the budget.
func TestFleetSizeDiscovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	labels := map[string]string{"app": "fleetagent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "fleetagent", Name: "fleetagent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "fleetagent"}}},
			},
		},
	}
	ds, err := admin.AppsV1().DaemonSets("fleetagent").Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No controller-manager runs: set the status a DaemonSet controller would.
	ds.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 7, CurrentNumberScheduled: 7, NumberReady: 7}
	if _, err := admin.AppsV1().DaemonSets("fleetagent").UpdateStatus(ctx, ds, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := limiter.New(limiter.Config{FleetQPS: 70, AssumedFleetSize: 70, DaemonSetNamespace: "fleetagent", DaemonSetName: "fleetagent", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Stats().Rate; got != 1 {
		t.Fatalf("rate before discovery = %v, want 70/70 = 1", got)
	}
	cfg := cp.UserConfig("disc-agent")
	b.Instrument(cfg)
	start := time.Now()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFleetSize(ctx); err != nil {
		t.Fatalf("fleet size not discovered: %v %+v", err, b.Stats())
	}
	if got := b.Stats().FleetSize; got != 7 {
		t.Fatalf("WaitFleetSize returned with fleet size %d, want 7", got)
	}
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Rate != 10 || s.FleetSizeRefreshes != 1 || s.Requests["get 200"] != 1 {
		t.Errorf("after discovery: rate %v refreshes %d requests %v; want 10, 1, one get", s.Rate, s.FleetSizeRefreshes, s.Requests)
	}
	evs := userEvents(t, "disc-agent", start, time.Now().Add(time.Second))
	if len(evs) != 1 || evs[0].Verb != "get" || evs[0].Resource() != "daemonsets" || evs[0].Query().Get("resourceVersion") != "0" {
		for _, e := range evs {
			t.Logf("audit: %s %s", e.Verb, e.RequestURI)
		}
		t.Fatalf("want exactly one cache-served GET of the DaemonSet, got %d requests", len(evs))
	}
}

// TestAPIServerDown stops the apiserver under an agent that keeps
// listing: connection errors put it into backoff and open the breaker, so
// it knocks on a closed port at the backoff's pace instead of in a hot
// loop, and it recovers on its own when the apiserver is back.
func TestAPIServerDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b, err := limiter.New(limiter.Config{FleetQPS: 50, FleetSize: 1, InitialBackoff: 200 * time.Millisecond, MaxBackoff: time.Second,
		BreakerThreshold: 3, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cp.UserConfig("down-agent")
	b.Instrument(cfg)
	cs := kubernetes.NewForConfigOrDie(cfg)
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); listLoop(loopCtx, cs, "down-node") }()
	defer func() { stopLoop(); <-loopDone }()
	time.Sleep(time.Second)

	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			if err := cp.StartAPIServer(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}()
	time.Sleep(5 * time.Second)
	s := b.Stats()
	downFor := time.Since(stopped)
	attempts := s.ConnErrors
	t.Logf("apiserver down %v: %d connection attempts (budget alone would allow %.0f), breaker %v, opened %d times",
		downFor.Round(time.Millisecond), attempts, 50*downFor.Seconds(), s.Breaker, s.BreakerOpens)
	if s.BreakerOpens == 0 || attempts < 3 {
		t.Errorf("connection errors did not open the breaker: %+v", s)
	}
	// With backoff from 200ms doubling to 1s (±50%), 5s allow about 10
	// attempts; the budget alone would allow 250.
	if float64(attempts) > 25 {
		t.Errorf("%d connection attempts in %v: backoff is not holding the agent back", attempts, downFor)
	}
	if deg, why := b.Degraded(); !deg {
		t.Errorf("Degraded() = false with the apiserver down (%q)", why)
	}

	before := s.Requests["list 200"]
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	for b.Stats().Requests["list 200"] == before || b.Stats().Breaker != limiter.BreakerClosed {
		if ctx.Err() != nil {
			t.Fatalf("agent did not recover after the apiserver came back: %+v", b.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("recovered %v after the apiserver was ready again", time.Since(back).Round(time.Millisecond))
}
