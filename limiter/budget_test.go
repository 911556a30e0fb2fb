package limiter

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// newTestBudget returns a budget on a fake clock at t0 with a seeded rand.
func newTestBudget(t *testing.T, cfg Config) (*Budget, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	cfg.Clock = clk
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(1, 2))
	}
	cfg.Logger = discardLogger()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b, clk
}

// startSpread applies the start-up spread as the first request would, then
// steps the clock past it so the bucket is full.
func startSpread(b *Budget, clk *clocktesting.FakeClock) {
	b.mu.Lock()
	b.bucket.spreadOnce(clk.Now())
	b.mu.Unlock()
	clk.Step(time.Hour)
}

func TestValidate(t *testing.T) {
	if err := (Config{FleetSize: 10}).Validate(); err != nil {
		t.Errorf("fixed fleet size with defaults: %v", err)
	}
	if err := (Config{DaemonSetNamespace: "ns", DaemonSetName: "fleetagent"}).Validate(); err != nil {
		t.Errorf("discovery with defaults: %v", err)
	}
	bad := Config{
		FleetQPS:               -1,
		FleetSize:              0, // discovery without a DaemonSet name
		AssumedFleetSize:       -3,
		FleetSizeRefresh:       -time.Second,
		FleetSizeRefreshJitter: 1.5,
		Burst:                  -1,
		KillSwitchPoll:         -time.Second,
		InitialBackoff:         time.Minute,
		MaxBackoff:             time.Second,
		BackoffMultiplier:      0.5,
		BackoffRandomization:   1,
		MaxRetryAfter:          -1,
		BreakerThreshold:       -1,
		LatencyFactor:          0.5,
		LatencyFloor:           -1,
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted a config with every field wrong")
	}
	want := []string{
		"fleet QPS is -1: set it to the total requests per second",
		"DaemonSet namespace or name is empty: set both",
		"assumed fleet size is -3",
		"fleet size refresh interval is -1s",
		"fleet size refresh jitter is 1.5: set a fraction in [0, 1)",
		"burst is -1",
		"kill switch poll interval is -1s",
		"initial backoff 1m0s exceeds max backoff 1s",
		"backoff multiplier is 0.5: set it to at least 1",
		"backoff randomization is 1",
		"max Retry-After is -1ns",
		"breaker threshold is -1",
		"latency factor is 0.5: set it above 1",
		"latency floor is -1ns",
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("Validate error lacks %q; got:\n%s", w, msg)
		}
	}
	if got := len(strings.Split(msg, "\n")); got != len(want) {
		t.Errorf("Validate reported %d problems, want %d (one per line):\n%s", got, len(want), msg)
	}
	if _, err := New(bad); err == nil {
		t.Error("New accepted an invalid config")
	}
}

func TestRateMath(t *testing.T) {
	b, clk := newTestBudget(t, Config{FleetQPS: 50, FleetSize: 1000})
	s := b.Stats()
	if s.Rate != 0.05 || s.FleetSize != 1000 || s.Burst != 2 {
		t.Fatalf("stats = rate %v fleet %d burst %d, want 0.05, 1000, 2", s.Rate, s.FleetSize, s.Burst)
	}
	if got := (&clientGoLimiter{b}).QPS(); got != float32(0.05) {
		t.Errorf("client-go QPS = %v, want 0.05", got)
	}
	// A long idle fills the bucket to Burst; then tokens come every 1/rate = 20s.
	clk.Step(time.Hour)
	now := clk.Now()
	for i := 0; i < 2; i++ {
		if d := b.bucket.lim.ReserveN(now, 1).DelayFrom(now); d != 0 {
			t.Fatalf("burst token %d: delay %v, want 0", i, d)
		}
	}
	if d := b.bucket.lim.ReserveN(now, 1).DelayFrom(now); d != 20*time.Second {
		t.Errorf("token after burst: delay %v, want 20s", d)
	}
	b.setFleetSize(500, SourceDaemonSet)
	if got := b.Stats().Rate; got != 0.1 {
		t.Errorf("rate after fleet size 500 = %v, want 0.1", got)
	}
	b.setFleetSize(0, SourceDaemonSet) // ignored: a fleet has at least this agent
	if got := b.Stats().FleetSize; got != 500 {
		t.Errorf("fleet size after setFleetSize(0) = %d, want 500", got)
	}
	d := DefaultConfig()
	if d.FleetQPS != 100 || d.AssumedFleetSize != 5000 || d.KillSwitchPoll != 2*time.Second {
		t.Errorf("DefaultConfig = %+v", d)
	}
}

// TestStartupSpread checks that the first token of many budgets created at
// the same instant is spread uniformly over the window 1/rate, and that
// the second comes one full interval after the first.
func TestStartupSpread(t *testing.T) {
	const agents, bins = 4000, 10
	rng := rand.New(rand.NewPCG(7, 7))
	window := 20 * time.Second // 50 req/s over 1000 agents
	var hist [bins]int
	for i := 0; i < agents; i++ {
		b, _ := newTestBudget(t, Config{FleetQPS: 50, FleetSize: 1000, Rand: rng})
		b.mu.Lock()
		b.bucket.spreadOnce(t0) // the first request
		b.mu.Unlock()
		first := b.bucket.lim.ReserveN(t0, 1).DelayFrom(t0)
		if first < 0 || first > window {
			t.Fatalf("agent %d: first token after %v, outside [0, %v]", i, first, window)
		}
		if second := b.bucket.lim.ReserveN(t0, 1).DelayFrom(t0); second-first < window-time.Millisecond || second-first > window+time.Millisecond {
			t.Fatalf("agent %d: second token %v after the first, want %v", i, second-first, window)
		}
		hist[int(first*bins/window)%bins]++
	}
	// Expected 400 per bin; a binomial sd is 19, so ±25% is >5 sd.
	for i, n := range hist {
		if n < agents/bins*3/4 || n > agents/bins*5/4 {
			t.Errorf("spread bin %d has %d first tokens, want about %d: %v", i, n, agents/bins, hist)
		}
	}
	// The whole fleet's first tokens: in any 1s of the window at most
	// about FleetQPS arrive, not all 4000 at once.
	if hist[0] > agents/bins*5/4 {
		t.Errorf("first bin holds %d", hist[0])
	}
}

func TestBackoffNeverShorterThanRetryAfter(t *testing.T) {
	for _, ra := range []time.Duration{0, time.Second, 7 * time.Second, 90 * time.Second, time.Hour} {
		b, clk := newTestBudget(t, Config{FleetSize: 1, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, BreakerThreshold: 1000})
		for i := 0; i < 20; i++ {
			now := clk.Now()
			b.observe(now, outcomeThrottled, ra, false)
			until := b.Stats().BackoffUntil
			want := ra
			if want > b.cfg.MaxRetryAfter {
				want = b.cfg.MaxRetryAfter
			}
			if got := until.Sub(now); got < want {
				t.Fatalf("Retry-After %v, failure %d: backoff %v is shorter", ra, i, got)
			}
			if got := until.Sub(now); got > 30*time.Second*3/2 && got > want {
				t.Fatalf("Retry-After %v, failure %d: backoff %v exceeds max interval with jitter", ra, i, got)
			}
			reason, gateUntil, _ := b.checkLocked(now, false)
			if ra > 0 && (reason != "backing off" || !gateUntil.Equal(until)) {
				t.Fatalf("gate during backoff = %q until %v, want backing off until %v", reason, gateUntil, until)
			}
			if deg, why := b.Degraded(); ra > 0 && (!deg || !strings.Contains(why, "backing off after throttled")) {
				t.Fatalf("Degraded() = %v %q during backoff", deg, why)
			}
			clk.SetTime(until)
		}
	}
	// A concurrent success must not cut a server's Retry-After short.
	b, clk := newTestBudget(t, Config{FleetSize: 1})
	b.observe(clk.Now(), outcomeThrottled, 30*time.Second, false)
	b.observe(clk.Now(), outcomeSuccess, 0, false)
	if got := b.Stats().BackoffUntil.Sub(clk.Now()); got < 30*time.Second {
		t.Errorf("success cut Retry-After backoff to %v", got)
	}
	// A corrupt Retry-After is capped.
	b.observe(clk.Now(), outcomeServer, 1000*time.Hour, false)
	if got := b.Stats().BackoffUntil.Sub(clk.Now()); got > b.cfg.MaxRetryAfter+b.cfg.MaxBackoff*2 {
		t.Errorf("Retry-After of 1000h gave backoff %v, want it capped near %v", got, b.cfg.MaxRetryAfter)
	}
}

func TestBreakerTransitions(t *testing.T) {
	b, clk := newTestBudget(t, Config{FleetSize: 1, BreakerThreshold: 3, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second})
	// gate asks the breaker's gate about one request, as Wait does.
	gate := func() (reason string, until time.Time, probe bool) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.checkLocked(clk.Now(), true)
	}
	for i := 0; i < 2; i++ {
		b.observe(clk.Now(), outcomeServer, 0, false)
		if s := b.Stats(); s.Breaker != BreakerClosed || s.ConsecutiveFailures != i+1 {
			t.Fatalf("after %d failures: breaker %v, consecutive %d", i+1, s.Breaker, s.ConsecutiveFailures)
		}
	}
	b.observe(clk.Now(), outcomeConn, 0, false)
	s := b.Stats()
	if s.Breaker != BreakerOpen || s.BreakerOpens != 1 {
		t.Fatalf("after 3 failures: breaker %v opens %d, want open 1", s.Breaker, s.BreakerOpens)
	}
	if deg, why := b.Degraded(); !deg || !strings.Contains(why, "circuit breaker open after 3 consecutive failures (last: connection error)") {
		t.Fatalf("Degraded() = %v %q", deg, why)
	}
	reason, until, _ := gate()
	if reason != "circuit breaker open" || !until.Equal(s.BackoffUntil) {
		t.Fatalf("gate while open = %q until %v", reason, until)
	}

	// After the backoff: half-open, one probe at a time.
	clk.SetTime(s.BackoffUntil)
	b.mu.Lock()
	reason, _, probe := b.checkLocked(clk.Now(), true)
	reason2, _, probe2 := b.checkLocked(clk.Now(), true)
	b.mu.Unlock()
	if reason != "" || !probe {
		t.Fatalf("first request after open: gate %q probe %v, want the probe", reason, probe)
	}
	if reason2 != "circuit breaker half-open, probe in flight" || probe2 {
		t.Fatalf("second request while probing: gate %q probe %v", reason2, probe2)
	}
	if b.Stats().Breaker != BreakerHalfOpen {
		t.Fatal("breaker not half-open while probing")
	}
	// The probe fails: open again, with a longer backoff.
	b.observe(clk.Now(), outcomeThrottled, 0, true)
	s = b.Stats()
	if s.Breaker != BreakerOpen || s.BreakerOpens != 2 {
		t.Fatalf("after failed probe: %v opens %d", s.Breaker, s.BreakerOpens)
	}
	clk.SetTime(s.BackoffUntil)
	_, _, probe = gate()
	if !probe {
		t.Fatal("no probe after the second open")
	}
	// A canceled probe frees the slot without closing or opening.
	b.observe(clk.Now(), outcomeCanceled, 0, true)
	if s := b.Stats(); s.Breaker != BreakerHalfOpen {
		t.Fatalf("after canceled probe: %v", s.Breaker)
	}
	_, _, probe = gate()
	if !probe {
		t.Fatal("probe slot not freed by a canceled probe")
	}
	// The probe succeeds: closed, counters reset. (Traffic is respread
	// when the first request passes the gate after the hold, the probe
	// itself: TestRespreadAfterEveryHold.)
	b.observe(clk.Now(), outcomeSuccess, 0, true)
	s = b.Stats()
	if s.Breaker != BreakerClosed || s.ConsecutiveFailures != 0 {
		t.Fatalf("after successful probe: %v consecutive %d", s.Breaker, s.ConsecutiveFailures)
	}
	if deg, why := b.Degraded(); deg {
		t.Errorf("Degraded after close: %q", why)
	}
	// A slow answer to a probe closes the breaker (the server answered)
	// but backs off.
	for i := 0; i < 3; i++ {
		b.observe(clk.Now(), outcomeServer, 0, false)
	}
	clk.SetTime(b.Stats().BackoffUntil)
	_, _, probe = gate()
	b.observe(clk.Now(), outcomeSlow, 0, probe)
	if s := b.Stats(); !probe || s.Breaker != BreakerClosed || !s.BackingOff || s.Slow != 1 {
		t.Fatalf("after a slow probe: probe %v breaker %v backing off %v slow %d", probe, s.Breaker, s.BackingOff, s.Slow)
	}
	// Slow responses back off but do not count towards the breaker.
	for i := 0; i < 5; i++ {
		b.observe(clk.Now(), outcomeSlow, 0, false)
	}
	if s := b.Stats(); s.Breaker != BreakerClosed || s.Slow != 6 || !s.BackingOff {
		t.Errorf("after slow responses: breaker %v slow %d backing off %v", s.Breaker, s.Slow, s.BackingOff)
	}
}

func TestRisingLatency(t *testing.T) {
	b, _ := newTestBudget(t, Config{FleetSize: 1, LatencyFactor: 5, LatencyFloor: time.Second})
	for i := 0; i < 10; i++ {
		if b.latency.observe(100 * time.Millisecond) {
			t.Fatal("steady 100ms counted as slow")
		}
	}
	if b.latency.observe(900 * time.Millisecond) {
		t.Error("900ms is 9x the average but under the 1s floor")
	}
	b2, _ := newTestBudget(t, Config{FleetSize: 1, LatencyFactor: 5, LatencyFloor: time.Second})
	for i := 0; i < 10; i++ {
		b2.latency.observe(300 * time.Millisecond)
	}
	if !b2.latency.observe(3 * time.Second) {
		t.Error("3s after a 300ms average not counted as rising latency")
	}
}

func TestKillSwitchFileStates(t *testing.T) {
	for content, on := range map[string]bool{
		"": false, "0": false, "false": false, "off": false, "OFF\n": false, "  False \n": false,
		"on": true, "1": true, "true": true, "stop": true, "yes": true, "Off please": true,
	} {
		if got := KillSwitchOn([]byte(content)); got != on {
			t.Errorf("KillSwitchOn(%q) = %v, want %v", content, got, on)
		}
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "kill")
	b, _ := newTestBudget(t, Config{FleetSize: 1, KillSwitchPath: path})
	check := func(want bool, what string) {
		t.Helper()
		b.pollKillSwitch()
		if got := b.Stats().Killed; got != want {
			t.Fatalf("%s: killed = %v, want %v", what, got, want)
		}
	}
	check(false, "missing file")
	// A ConfigMap volume: the key is a symlink into a ..data directory that
	// an update swaps atomically.
	writeVersion := func(name, value string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "kill"), []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("v1", "off")
	if err := os.Symlink(filepath.Join("..data", "kill"), path); err != nil {
		t.Fatal(err)
	}
	check(false, `ConfigMap value "off"`)
	writeVersion("v2", "on\n")
	check(true, `ConfigMap swapped to "on"`)
	if deg, why := b.Degraded(); !deg || !strings.Contains(why, "kill switch is on") {
		t.Errorf("Degraded() = %v %q while killed", deg, why)
	}
	writeVersion("v3", "false")
	check(false, `ConfigMap swapped to "false"`)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("maintenance"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(true, "plain file with a reason")
	// Unreadable (here: a directory): keep the previous state.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	check(true, "unreadable switch keeps on")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	check(false, "file removed")
	if got := b.Stats().KillSwitchFlips; got != 4 {
		t.Errorf("kill switch flips = %d, want 4", got)
	}
}

// TestKillSwitchHoldsRequests drives the transport with a fake clock in a
// synctest bubble, where synctest.Wait returns only once every goroutine
// is durably blocked: so "the request reached the gate and waits there"
// is established (HeldAtGate, and nothing sent) before the test checks
// that nothing was sent, however much time passes. An open watch ends when
// the switch turns on; after it turns off the request goes out after the
// resume jitter.
func TestKillSwitchHoldsRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTestBudget(t, Config{FleetQPS: 1, FleetSize: 1, Burst: 1})
		startSpread(b, clk)
		sent := make(chan *http.Request, 10)
		watchBody := &blockingBody{closed: make(chan struct{})}
		base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			sent <- req
			if verbOf(req) == "watch" {
				go func() { <-req.Context().Done(); watchBody.close() }()
				return &http.Response{StatusCode: 200, Body: watchBody, Header: http.Header{}}, nil
			}
			return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
		})
		rt := &roundTripper{b: b, next: base}
		wreq, _ := http.NewRequest("GET", "https://api/api/v1/pods?watch=true", nil)
		resp, err := rt.RoundTrip(wreq)
		if err != nil {
			t.Fatal(err)
		}
		<-sent
		if got := b.Stats().WatchesOpen; got != 1 {
			t.Fatalf("open watches = %d, want 1", got)
		}
		b.setKilled(true)
		if _, err := resp.Body.Read(make([]byte, 1)); err == nil || err.Error() != "EOF" {
			t.Fatalf("watch read after kill = %v, want EOF", err)
		}
		resp.Body.Close()
		if s := b.Stats(); s.WatchesOpen != 0 || s.WatchesKilled != 1 {
			t.Fatalf("after kill: open %d killed %d", s.WatchesOpen, s.WatchesKilled)
		}

		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequest("GET", "https://api/api/v1/pods", nil)
			_, err := rt.RoundTrip(req)
			done <- err
		}()
		synctest.Wait() // the request goroutine is blocked
		checkHeld := func(when string) {
			t.Helper()
			select {
			case r := <-sent:
				t.Fatalf("%s: request %s reached the apiserver while the kill switch was on", when, r.URL)
			case err := <-done:
				t.Fatalf("%s: request returned while killed: %v", when, err)
			default:
			}
			if got := b.Stats().HeldAtGate; got != 1 {
				t.Fatalf("%s: %d requests held at the gate, want 1", when, got)
			}
		}
		checkHeld("at once")
		clk.Step(time.Hour) // time passes: the switch, not the clock, holds the request
		synctest.Wait()
		checkHeld("an hour later")

		b.setKilled(false)
		synctest.Wait()
		// The resume jitter is a timer on the fake clock.
		select {
		case err := <-done:
			t.Fatalf("request sent with no resume jitter: %v", err)
		default:
		}
		if !clk.HasWaiters() {
			t.Fatal("the resumed request waits on no timer")
		}
		clk.Step(time.Second) // the whole window
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatal("request still held one window after the switch turned off")
		}
		if r := <-sent; r.URL.Path != "/api/v1/pods" {
			t.Fatalf("sent %s", r.URL)
		}

		// A request whose ctx ends while killed returns the ctx error.
		b.setKilled(true)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://api/api/v1/pods", nil)
		if _, err := rt.RoundTrip(req); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "kill switch is on") {
			t.Fatalf("canceled request while killed: %v", err)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// blockingBody is a watch stream that blocks until closed.
type blockingBody struct{ closed chan struct{} }

func (b *blockingBody) Read([]byte) (int, error) {
	<-b.closed
	return 0, context.Canceled
}
func (b *blockingBody) close() {
	select {
	case <-b.closed:
	default:
		close(b.closed)
	}
}
func (b *blockingBody) Close() error { b.close(); return nil }

func TestClassify(t *testing.T) {
	now := t0
	req, _ := http.NewRequest("GET", "https://api/api/v1/pods", nil)
	resp := func(code int, ra string) *http.Response {
		h := http.Header{}
		if ra != "" {
			h.Set("Retry-After", ra)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	canceledCtx, cancel := context.WithCancel(context.Background())
	cancel()
	canceledReq := req.WithContext(canceledCtx)
	for _, tc := range []struct {
		name string
		req  *http.Request
		resp *http.Response
		err  error
		want outcome
		ra   time.Duration
	}{
		{"200", req, resp(200, ""), nil, outcomeSuccess, 0},
		{"404 is the client's problem", req, resp(404, ""), nil, outcomeSuccess, 0},
		{"429 seconds", req, resp(429, "3"), nil, outcomeThrottled, 3 * time.Second},
		{"429 without header", req, resp(429, ""), nil, outcomeThrottled, 0},
		{"503 date", req, resp(503, now.Add(90*time.Second).Format(http.TimeFormat)), nil, outcomeServer, 90 * time.Second},
		{"500 garbage header", req, resp(500, "soon"), nil, outcomeServer, 0},
		{"refused", req, nil, &url.Error{Op: "Get", URL: "https://api", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, outcomeConn, 0},
		{"caller canceled", canceledReq, nil, &url.Error{Op: "Get", URL: "https://api", Err: context.Canceled}, outcomeCanceled, 0},
	} {
		o, _, ra := classify(tc.req.Context(), tc.resp, tc.err, now)
		if o != tc.want || ra != tc.ra {
			t.Errorf("%s: classify = %v %v, want %v %v", tc.name, o, ra, tc.want, tc.ra)
		}
	}
	if !IsBackpressure(&url.Error{Op: "Get", URL: "x", Err: &net.OpError{Op: "dial", Err: errors.New("refused")}}) {
		t.Error("IsBackpressure(net error) = false")
	}
	if IsBackpressure(errors.New("validation failed")) || IsBackpressure(nil) {
		t.Error("IsBackpressure true for a plain error")
	}
}

func TestVerbOf(t *testing.T) {
	for _, tc := range []struct{ method, url, want string }{
		{"GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dn1&resourceVersion=0", "list"},
		{"GET", "/api/v1/pods?watch=true&resourceVersion=5", "watch"},
		{"GET", "/api/v1/watch/pods", "watch"},
		{"GET", "/api/v1/nodes/n1", "get"},
		{"GET", "/api/v1/namespaces", "list"},
		{"GET", "/api/v1/namespaces/kube-system", "get"},
		{"GET", "/apis/apps/v1/namespaces/ns/daemonsets/fleetagent", "get"},
		{"GET", "/apis/apps/v1/daemonsets", "list"},
		{"GET", "/api/v1/namespaces/ns/pods/p/log", "get"},
		{"GET", "/apis", "get"},
		{"POST", "/api/v1/namespaces/ns/pods", "create"},
		{"PUT", "/api/v1/namespaces/ns/pods/p", "update"},
		{"PATCH", "/api/v1/namespaces/ns/pods/p", "patch"},
		{"DELETE", "/api/v1/namespaces/ns/pods/p", "delete"},
		{"DELETE", "/api/v1/namespaces/ns/pods", "deletecollection"},
	} {
		req, _ := http.NewRequest(tc.method, "https://api"+tc.url, nil)
		if got := verbOf(req); got != tc.want {
			t.Errorf("verbOf(%s %s) = %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}

func TestReadFleetSize(t *testing.T) {
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "obs", Name: "fleetagent"},
		Status:     appsv1.DaemonSetStatus{DesiredNumberScheduled: 250, CurrentNumberScheduled: 240},
	}
	client := fake.NewClientset(ds).AppsV1()
	b, _ := newTestBudget(t, Config{FleetQPS: 50, DaemonSetNamespace: "obs", DaemonSetName: "fleetagent", AssumedFleetSize: 1000})
	if s := b.Stats(); s.FleetSize != 1000 || s.Rate != 0.05 {
		t.Fatalf("before discovery: fleet %d rate %v, want the assumed 1000 and 0.05", s.FleetSize, s.Rate)
	}
	n, err := b.readFleetSize(context.Background(), client)
	if err != nil || n != 250 {
		t.Fatalf("readFleetSize = %d, %v; want 250", n, err)
	}
	b.setFleetSize(n, SourceDaemonSet)
	if got := b.Stats().Rate; got != 0.2 {
		t.Errorf("rate with 250 agents = %v, want 0.2", got)
	}
	b2, _ := newTestBudget(t, Config{DaemonSetNamespace: "obs", DaemonSetName: "missing"})
	if _, err := b2.readFleetSize(context.Background(), client); err == nil || !strings.Contains(err.Error(), "grant the agent get on daemonsets") {
		t.Errorf("missing DaemonSet: %v", err)
	}
	// The refresh interval is jittered within ±20%.
	for i := 0; i < 100; i++ {
		d := b.refreshInterval()
		if d < 8*time.Minute || d > 12*time.Minute {
			t.Fatalf("refresh interval %v outside 10m ± 20%%", d)
		}
	}
}

func TestLifecycle(t *testing.T) {
	b, _ := newTestBudget(t, Config{FleetSize: 3})
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown without Start: %v", err)
	}
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := b.Start(context.Background()); err == nil {
		t.Error("Start after Shutdown succeeded")
	}

	synctest.Test(t, func(t *testing.T) {
		b, clk := newTestBudget(t, Config{FleetSize: 3, KillSwitchPath: filepath.Join(t.TempDir(), "kill"), KillSwitchPoll: time.Second})
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err == nil {
			t.Error("second Start succeeded")
		}
		if err := os.WriteFile(b.cfg.KillSwitchPath, []byte("on"), 0o644); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()       // the poller waits for its ticker
		clk.Step(time.Second) // one poll interval: the poller reads the file
		synctest.Wait()
		if !b.Stats().Killed {
			t.Fatal("the kill switch was not read within one poll interval")
		}
		if err := b.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := b.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	})

	disc, _ := newTestBudget(t, Config{DaemonSetNamespace: "ns", DaemonSetName: "ds"})
	if err := disc.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "call Instrument(restConfig) before Start") {
		t.Errorf("Start with discovery and no Instrument: %v", err)
	}
}

// TestSpreadStartsAtFirstRequest: however long an agent takes between New
// and its first request, that request does not find a token waiting; it
// is spread like every other agent's.
func TestSpreadStartsAtFirstRequest(t *testing.T) {
	b, clk := newTestBudget(t, Config{FleetQPS: 1, FleetSize: 1})
	clk.Step(time.Hour) // building clients took an hour
	l := &clientGoLimiter{b}
	if l.TryAccept() {
		t.Fatal("first request found a token: the spread was applied at New")
	}
	clk.Step(time.Second) // the whole window
	if !l.TryAccept() {
		t.Fatal("no token after the spread window")
	}
}

// halfSource makes rand.Float64 return 0.5.
type halfSource struct{}

func (halfSource) Uint64() uint64 { return 1 << 52 }

// TestFleetSizeChangeShortensWait: a request waiting for a slot computed
// at the assumed fleet size re-reserves when the discovered size raises
// the rate, instead of waiting out the old slot.
func TestFleetSizeChangeShortensWait(t *testing.T) {
	synctest.Test(t, testFleetSizeChangeShortensWait)
}

func testFleetSizeChangeShortensWait(t *testing.T) {
	b, clk := newTestBudget(t, Config{FleetQPS: 1, FleetSize: 100, Burst: 1, Rand: rand.New(halfSource{})})
	b.mu.Lock()
	b.bucket.spreadOnce(t0) // first token due at 0.5 × 100s
	lim, ch := b.bucket.lim, b.changed
	b.mu.Unlock()
	res := make(chan bool, 1)
	go func() {
		ok, err := b.payToken(context.Background(), lim, ch)
		if err != nil {
			t.Error(err)
		}
		res <- ok
	}()
	synctest.Wait() // the request waits for its 50s slot
	if !clk.HasWaiters() {
		t.Fatal("the request does not wait for a token")
	}
	b.setFleetSize(1, SourceDaemonSet)
	if ok := <-res; ok {
		t.Fatal("the waiting request kept its slot after the rate changed")
	}
	if d := lim.ReserveN(t0, 1).DelayFrom(t0); d != 500*time.Millisecond {
		t.Errorf("re-reserved slot after the rate rose 100x: %v, want 500ms (the token given back plus half a token at 1/s)", d)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestResumeKeepsRateBound: a greedy client across many kill-switch and
// breaker resumes never gets more requests out in a window than the
// bucket allows: a resume respreads, but never grants tokens the bucket
// did not have. The client sends as production does: client-go's
// RateLimiter.Wait, then the transport's RoundTrip (TryAccept, which
// production never calls, is not used); the apiserver answers 500 now and
// then, so the breaker opens and closes on a probe.
func TestResumeKeepsRateBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const qps, burst = 4.0, 2
		b, clk := newTestBudget(t, Config{FleetQPS: qps, FleetSize: 1, Burst: burst, BreakerThreshold: 1,
			InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		startSpread(b, clk)
		var mu sync.Mutex
		var sent []time.Time
		failNext := false
		base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			sent = append(sent, clk.Now())
			code := 200
			if failNext {
				code, failNext = 500, false
			}
			return &http.Response{StatusCode: code, Body: http.NoBody, Header: http.Header{}}, nil
		})
		limiter, rt := &clientGoLimiter{b}, &roundTripper{b: b, next: base}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { // the greedy client
			defer close(done)
			for ctx.Err() == nil {
				if limiter.Wait(ctx) != nil {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", "https://api/api/v1/pods", nil)
				if resp, err := rt.RoundTrip(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
		for step := 0; step < 2000; step++ { // 20 s in 10 ms steps
			synctest.Wait()
			if step%30 == 0 {
				b.setKilled(true)
				synctest.Wait()
				b.setKilled(false)
			}
			if step%70 == 35 { // the breaker opens, and later closes on a probe
				mu.Lock()
				failNext = true
				mu.Unlock()
			}
			clk.Step(10 * time.Millisecond)
		}
		cancel()
		synctest.Wait()
		<-done

		s := b.Stats()
		if len(sent) < 20 || b.bucket.resumes < 60 || s.BreakerOpens < 5 {
			t.Fatalf("%d requests over %d resumes and %d breaker opens: the simulation did not exercise the budget", len(sent), b.bucket.resumes, s.BreakerOpens)
		}
		// A greedy client keeps the bucket below one token, and a resume
		// keeps at most one, so the bound is rate×T+1 (tighter than the
		// bucket's rate×T+Burst). A resume that granted tokens the
		// bucket did not have would break it.
		for _, w := range []time.Duration{250 * time.Millisecond, time.Second, 5 * time.Second} {
			limit := int(qps*w.Seconds()) + 1
			for i := range sent {
				n := 0
				for j := i; j < len(sent) && sent[j].Sub(sent[i]) < w; j++ {
					n++
				}
				if n > limit {
					t.Fatalf("%d requests within %v from %v; the bucket allows %d", n, w, sent[i].Sub(t0), limit)
				}
			}
		}
		t.Logf("%d requests, %d resumes, %d breaker opens in 20 s at %v/s", len(sent), b.bucket.resumes, s.BreakerOpens, qps)
	})
}

func TestWaitFleetSizeFixedOrCancelled(t *testing.T) {
	fixed, err := New(Config{FleetQPS: 10, FleetSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := fixed.WaitFleetSize(context.Background()); err != nil {
		t.Fatalf("fixed fleet size must not wait: %v", err)
	}
	disc, err := New(Config{FleetQPS: 10, DaemonSetNamespace: "ns", DaemonSetName: "ds"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := disc.WaitFleetSize(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("undiscovered fleet size with a cancelled ctx: want Canceled, got %v", err)
	}
}
