package agent

import (
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/limiter"
)

// cacheView is what the stale gate reads of the informers.
type cacheView interface {
	Pods() []*corev1.Pod
	Node() (*corev1.Node, bool)
	HasSynced() bool
	Watching() bool
	LastError() error
}

// kubeState is what the collectors read, with why it is stale: the stale
// gate over the informers, or the kubelet source.
type kubeState interface {
	collector.KubeState
	Stale() (bool, string)
}

// gateView is what the stale gate reads of the budget.
type gateView interface {
	Killed() bool
	Degraded() (bool, string)
}

// budgetGate is the budget as a gateView.
type budgetGate struct{ b *limiter.Budget }

func (g budgetGate) Killed() bool             { return g.b.Stats().Killed }
func (g budgetGate) Degraded() (bool, string) { return g.b.Degraded() }

// staleGate is the KubeState the collectors read. It reports "not synced"
// (so pod and node state collectors withhold their series, which then go
// stale downstream) while the kill switch is on, or while the apiserver has
// been unreachable for longer than after. Once stale, the caches stay
// withheld after the cause has gone until both informers have a watch open
// again (resumed from their last resourceVersion, or relisted): until then
// they hold what they knew when traffic stopped, not the node's state.
type staleGate struct {
	inner  cacheView
	budget gateView
	clk    clock.PassiveClock
	after  time.Duration

	mu        sync.Mutex
	badSince  time.Time
	staleWhy  string
	staleFlag bool
}

func (g *staleGate) Pods() []*corev1.Pod        { return g.inner.Pods() }
func (g *staleGate) Node() (*corev1.Node, bool) { return g.inner.Node() }

func (g *staleGate) HasSynced() bool {
	if !g.inner.HasSynced() {
		return false
	}
	stale, _ := g.Stale()
	return !stale
}

// Stale reports whether Kubernetes-derived series are being withheld, and
// why.
func (g *staleGate) Stale() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clk.Now()
	if g.budget.Killed() {
		g.staleFlag, g.staleWhy = true, "kill switch on"
		return true, g.staleWhy
	}
	var why string
	if deg, reason := g.budget.Degraded(); deg {
		why = reason
	} else if err := g.inner.LastError(); err != nil {
		why = err.Error()
	}
	if why != "" {
		if g.badSince.IsZero() {
			g.badSince = now
		}
		if now.Sub(g.badSince) >= g.after {
			g.staleFlag, g.staleWhy = true, fmt.Sprintf("apiserver unreachable for %s: %s", now.Sub(g.badSince).Round(time.Second), why)
		}
		return g.staleFlag, g.staleWhy
	}
	g.badSince = time.Time{}
	if g.staleFlag && !g.inner.Watching() {
		g.staleWhy = resuming
		return true, g.staleWhy
	}
	g.staleFlag, g.staleWhy = false, ""
	return false, ""
}

const resuming = "resuming: the caches hold the state from before the interruption until this node's watches are open again"
