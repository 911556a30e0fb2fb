package agent

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"
)

type fakeCache struct {
	mu               sync.Mutex
	synced, watching bool
	lastErr          error
	pods             []*corev1.Pod
}

func (f *fakeCache) Pods() []*corev1.Pod        { return f.pods }
func (f *fakeCache) Node() (*corev1.Node, bool) { return nil, false }
func (f *fakeCache) HasSynced() bool            { f.mu.Lock(); defer f.mu.Unlock(); return f.synced }
func (f *fakeCache) Watching() bool             { f.mu.Lock(); defer f.mu.Unlock(); return f.watching }
func (f *fakeCache) LastError() error           { f.mu.Lock(); defer f.mu.Unlock(); return f.lastErr }

type fakeGate struct {
	killed   bool
	degraded string
}

func (f *fakeGate) Killed() bool             { return f.killed }
func (f *fakeGate) Degraded() (bool, string) { return f.degraded != "", f.degraded }

// TestStaleGate: the kill switch withholds Kubernetes state at once; an
// unreachable apiserver after the grace period; and after either, the
// caches stay withheld until the watches are open again, because until then
// they hold the state from before the interruption.
func TestStaleGate(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	cache := &fakeCache{synced: true, watching: true}
	budget := &fakeGate{}
	g := &staleGate{inner: cache, budget: budget, clk: clk, after: time.Minute}
	check := func(step string, wantStale bool, why string) {
		t.Helper()
		stale, got := g.Stale()
		if stale != wantStale || !strings.Contains(got, why) {
			t.Errorf("%s: Stale() = %v %q, want %v containing %q", step, stale, got, wantStale, why)
		}
		if g.HasSynced() == wantStale {
			t.Errorf("%s: HasSynced() = %v while stale=%v", step, !wantStale, wantStale)
		}
	}
	check("healthy", false, "")

	budget.killed = true
	cache.watching = false // the switch closes the watches
	check("kill switch on", true, "kill switch on")
	budget.killed = false
	check("switch off, watches not yet resumed", true, "resuming")
	cache.watching = true
	check("watches resumed", false, "")

	// Unreachable: not stale within the grace period, stale after it.
	budget.degraded = "circuit breaker open"
	check("breaker just opened", false, "")
	clk.SetTime(clk.Now().Add(2 * time.Minute))
	check("breaker open past the grace period", true, "apiserver unreachable for 2m0s: circuit breaker open")
	budget.degraded = ""
	cache.watching = false
	check("apiserver back, watches not yet reopened", true, "resuming")
	cache.lastErr = errors.New("watch pods: connection refused")
	check("a watch fails again", true, "resuming")
	cache.lastErr = nil
	cache.watching = true
	check("watches reopened", false, "")
}
