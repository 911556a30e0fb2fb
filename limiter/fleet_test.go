package limiter

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// windows is how a fleet's requests fell into 1-second windows.
type windows struct {
	maxWindow int // most requests in any 1-second window
	p99Window int // 99th percentile of the 1-second windows that start at a request
}

// windowsOf measures the 1-second windows that start at an arrival.
func windowsOf(arrivals []time.Time) windows {
	counts := windowCounts(arrivals)
	slices.Sort(counts)
	if len(counts) == 0 {
		return windows{}
	}
	return windows{maxWindow: counts[len(counts)-1], p99Window: counts[len(counts)*99/100]}
}

// worst keeps, of w and o, the larger of each figure.
func (w *windows) worst(o windows) {
	w.maxWindow = max(w.maxWindow, o.maxWindow)
	w.p99Window = max(w.p99Window, o.p99Window)
}

// startResult is what one simulated simultaneous start measured.
type startResult struct {
	requests int
	windows
	synced    time.Duration // until every agent had both watches established
	allSynced bool
}

// simulateStart starts sc.agents agents at the same instant of one fake
// clock and runs them until every agent has its two watches, or an hour
// of fake time has passed. It must run inside a synctest bubble.
func simulateStart(t testing.TB, sc simConfig) startResult {
	f := startFleet(t, sc)
	ok := f.runUntil(f.start.Add(time.Hour), func() bool { s, _ := f.allSynced(); return s })
	_, last := f.allSynced()
	arrivals := f.server.arrivalsSince(f.start)
	f.stop(t)
	return startResult{requests: len(arrivals), windows: windowsOf(arrivals), synced: last.Sub(f.start), allSynced: ok}
}

// TestFleetStartBound starts N agents at the same instant, each through
// its own Budget with fleet-size discovery as shipped (FleetSize 0: the
// hint if one is mounted, else AssumedFleetSize, refined by the
// DaemonSet GET), each sending what an agent sends at start: the
// fleet-size GET, a LIST and a WATCH of its pods, a LIST and a WATCH of its
// Node. In every 1-second window the fleet stays within FleetQPS +
// Allowance(FleetQPS), whatever N; with a hint, 100 agents at 50 req/s
// (the first default; now 100) are all synced within 10 s; without one (the safe default of
// assuming 5000 agents) the start is slower but inside the same bound.
func TestFleetStartBound(t *testing.T) {
	const fleetQPS = 50.0
	bound := int(fleetQPS) + Allowance(fleetQPS)
	for _, tc := range []struct {
		agents, hint int
		syncedWithin time.Duration
	}{
		{agents: 100, hint: 100, syncedWithin: 10 * time.Second},
		{agents: 1000, hint: 1000},
		{agents: 5000, hint: 5000},
		// No hint: the first request is spread over 5000/50 = 100 s, the
		// other four follow at 100 agents' rate, one every 2 s.
		{agents: 100, syncedWithin: 100*time.Second + 4*2*time.Second},
		{agents: 5000},
	} {
		t.Run(fmt.Sprintf("agents=%d/hint=%d", tc.agents, tc.hint), func(t *testing.T) {
			var r startResult
			synctest.Test(t, func(t *testing.T) {
				r = simulateStart(t, simConfig{agents: tc.agents, fleetQPS: fleetQPS, seed: 1, hint: tc.hint})
			})
			t.Logf("%d agents, hint %d: %d requests, all synced after %v; largest 1-second window %d, p99 %d (FleetQPS %v, bound %d)",
				tc.agents, tc.hint, r.requests, r.synced.Round(time.Millisecond), r.maxWindow, r.p99Window, fleetQPS, bound)
			if !r.allSynced {
				t.Fatalf("not every agent synced within an hour of fake time")
			}
			if want := 5 * tc.agents; r.requests != want {
				t.Errorf("%d requests, want %d: one GET, two LISTs, two WATCHes per agent", r.requests, want)
			}
			if r.maxWindow > bound {
				t.Errorf("%d requests in one 1-second window; FleetQPS + Allowance = %d", r.maxWindow, bound)
			}
			if tc.syncedWithin > 0 && r.synced > tc.syncedWithin {
				t.Errorf("all synced after %v, want within %v", r.synced, tc.syncedWithin)
			}
		})
	}
}

// restartResult is what one simulated apiserver restart measured.
type restartResult struct {
	requests  int           // from the break
	windows                 // of the requests from the break
	maxUp     int           // most requests in any 1-second window from the apiserver's return
	recovered time.Duration // from the return until every agent watches again
	allBack   bool
	relists   int // LISTs after the break
}

// simulateRestart starts sc.agents agents, lets them sync and then idle
// for an hour (every bucket fills), then breaks every watch at the same
// instant and refuses connections for down, as an apiserver restart does,
// and runs until every agent has its two watches again.
func simulateRestart(t testing.TB, sc simConfig, down time.Duration) restartResult {
	f := startFleet(t, sc)
	if !f.runUntil(f.start.Add(2*time.Hour), func() bool { s, _ := f.allSynced(); return s }) {
		t.Fatal("the fleet did not sync")
	}
	time.Sleep(time.Hour) // virtual: idle, every bucket fills
	synctest.Wait()
	broke := time.Now()
	f.server.breakAll(true)
	time.Sleep(down) // virtual: the agents knock on a closed port meanwhile
	synctest.Wait()
	up := time.Now()
	f.server.setDown(false)
	ok := f.runUntil(up.Add(2*time.Hour), f.allWatching)
	back := time.Now()
	arrivals := f.server.arrivalsSince(broke)
	r := restartResult{requests: len(arrivals), windows: windowsOf(arrivals), maxUp: maxWindow(f.server.arrivalsSince(up)),
		recovered: back.Sub(up), allBack: ok, relists: f.server.countSince(broke, "list")}
	f.stop(t)
	return r
}

// TestReconnectStaysInBudget: when every agent's connections break at the
// same instant after the fleet idled (every bucket full), and the
// apiserver refuses connections for 30 s, the fleet's requests in every
// 1-second window from the break, refused attempts included, stay within
// FleetQPS + Allowance(FleetQPS): every agent backs off, and respreads
// when its gate reopens, so nobody comes back with a full bucket. Every
// agent re-establishes its watches from their resourceVersion, with no
// relist.
func TestReconnectStaysInBudget(t *testing.T) {
	const fleetQPS = 50.0
	bound := int(fleetQPS) + Allowance(fleetQPS)
	for _, agents := range []int{100, 1000, 5000} {
		t.Run(fmt.Sprintf("agents=%d", agents), func(t *testing.T) {
			var r restartResult
			synctest.Test(t, func(t *testing.T) {
				r = simulateRestart(t, simConfig{agents: agents, fleetQPS: fleetQPS, seed: 2, hint: agents}, 30*time.Second)
			})
			t.Logf("%d agents: %d requests from the break; largest 1-second window %d (p99 %d), %d from the return; all watching %v after the return (FleetQPS %v, bound %d)",
				agents, r.requests, r.maxWindow, r.p99Window, r.maxUp, r.recovered.Round(time.Millisecond), fleetQPS, bound)
			if !r.allBack {
				t.Fatal("not every agent re-established its watches within two hours of fake time")
			}
			if r.maxWindow > bound {
				t.Errorf("%d requests in one 1-second window after the break; FleetQPS + Allowance = %d", r.maxWindow, bound)
			}
			if r.relists != 0 {
				t.Errorf("%d LISTs after the break, want none: watches resume from their resourceVersion", r.relists)
			}
		})
	}
}

// runInBubble runs f in a synctest bubble from a benchmark: synctest has
// no benchmark form, and testing.RunTests gives the benchmark a *testing.T.
func runInBubble(b *testing.B, f func(t *testing.T)) {
	b.Helper()
	ok := testing.RunTests(func(_, _ string) (bool, error) { return true, nil },
		[]testing.InternalTest{{Name: b.Name(), F: func(t *testing.T) { synctest.Test(t, f) }}})
	if !ok {
		b.Fatal("simulation failed")
	}
}

// BenchmarkFleetStart reports, for N agents started at the same instant
// (the simulation of TestFleetStartBound, a new seed per iteration), the
// largest and the 99th-percentile number of requests in a 1-second window
// against FleetQPS (50), and the fake time until every agent was synced.
// Run it with -benchtime=Nx: each iteration is one start.
func BenchmarkFleetStart(b *testing.B) {
	const fleetQPS = 50.0
	for _, tc := range []struct{ agents, hint int }{
		{100, 100}, {1000, 1000}, {5000, 5000}, {100, 0}, {5000, 0},
	} {
		b.Run(fmt.Sprintf("agents=%d/hint=%d", tc.agents, tc.hint), func(b *testing.B) {
			var worst startResult
			seed := uint64(0)
			for b.Loop() {
				seed++
				runInBubble(b, func(t *testing.T) {
					r := simulateStart(t, simConfig{agents: tc.agents, fleetQPS: fleetQPS, seed: seed, hint: tc.hint})
					worst.worst(r.windows)
					worst.synced = max(worst.synced, r.synced)
				})
			}
			b.ReportMetric(float64(worst.maxWindow), "max_req/1s")
			b.ReportMetric(float64(worst.p99Window), "p99_req/1s")
			b.ReportMetric(fleetQPS, "fleet_qps")
			b.ReportMetric(float64(Allowance(fleetQPS)), "allowance")
			b.ReportMetric(worst.synced.Seconds(), "synced_s")
		})
	}
}

// BenchmarkFleetRestart reports, for N idle agents whose connections all
// break at once while the apiserver is down for 30 s (the simulation of
// TestReconnectStaysInBudget, a new seed per iteration), the largest and
// 99th-percentile requests in a 1-second window from the break, the
// largest from the apiserver's return, against FleetQPS (50), and the fake
// time from the return until every agent watches again.
func BenchmarkFleetRestart(b *testing.B) {
	const fleetQPS = 50.0
	for _, agents := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("agents=%d", agents), func(b *testing.B) {
			var worst restartResult
			seed := uint64(100)
			for b.Loop() {
				seed++
				runInBubble(b, func(t *testing.T) {
					r := simulateRestart(t, simConfig{agents: agents, fleetQPS: fleetQPS, seed: seed, hint: agents}, 30*time.Second)
					worst.worst(r.windows)
					worst.maxUp = max(worst.maxUp, r.maxUp)
					worst.recovered = max(worst.recovered, r.recovered)
				})
			}
			b.ReportMetric(float64(worst.maxWindow), "max_req/1s")
			b.ReportMetric(float64(worst.p99Window), "p99_req/1s")
			b.ReportMetric(float64(worst.maxUp), "max_req/1s_after_return")
			b.ReportMetric(fleetQPS, "fleet_qps")
			b.ReportMetric(float64(Allowance(fleetQPS)), "allowance")
			b.ReportMetric(worst.recovered.Seconds(), "recovered_s")
		})
	}
}
