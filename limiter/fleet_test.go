package limiter

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// startResult is what one simulated simultaneous start measured.
type startResult struct {
	requests  int
	maxWindow int           // most requests in any 1-second window
	p99Window int           // 99th percentile of the 1-second windows that start at a request
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
	counts := windowCounts(arrivals)
	slices.Sort(counts)
	r := startResult{requests: len(arrivals), synced: last.Sub(f.start), allSynced: ok}
	if len(counts) > 0 {
		r.maxWindow = counts[len(counts)-1]
		r.p99Window = counts[len(counts)*99/100]
	}
	return r
}

// TestFleetStartBound starts N agents at the same instant, each through
// its own Budget with fleet-size discovery as shipped (FleetSize 0: the
// hint if one is mounted, else AssumedFleetSize, refined by the
// DaemonSet GET), each sending what an agent sends at start: the
// fleet-size GET, a LIST and a WATCH of its pods, a LIST and a WATCH of its
// Node. In every 1-second window the fleet stays within FleetQPS +
// Allowance(FleetQPS), whatever N; with a hint, 100 agents at the default
// 50 req/s are all synced within 10 s; without one (the safe default of
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
					worst.maxWindow = max(worst.maxWindow, r.maxWindow)
					worst.p99Window = max(worst.p99Window, r.p99Window)
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
