package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

func (s *Session) restartHere(strategy string) bool { return s.cfg.restartAt(s.nodes, strategy) }

// restartAt says whether the apiserver restart runs for strategy at a
// cluster of nodes.
func (c Config) restartAt(nodes int, strategy string) bool {
	if len(c.RestartStrategies) > 0 && !slices.Contains(c.RestartStrategies, strategy) {
		return false
	}
	switch {
	case c.RestartNodes < 0:
		return false
	case c.RestartNodes == 0:
		return nodes == slices.Max(c.Nodes)
	default:
		return nodes == c.RestartNodes
	}
}

const (
	// restartTail is how long the window lasts after the last agent's
	// first success: its relists and new watches follow within seconds.
	restartTail = 5 * time.Second
)

// measureNoAgent restarts the apiserver with no agent running: the
// baseline for the admin probe in the restart table.
func (s *Session) measureNoAgent(ctx context.Context, st Strategy) (*Result, error) {
	if !s.restartHere(st.Name) {
		return nil, fmt.Errorf("bench: %s measures only the apiserver restart, which does not run at %d nodes (-bench.restart-nodes, -bench.restart-strategies)", st.Name, s.nodes)
	}
	r := &Result{Strategy: st.Name, Nodes: s.nodes, PodsPerNode: s.cfg.PodsPerNode, Window: s.cfg.Window,
		EtcdNet: true, Repeats: s.cfg.Repeats, Sample: s.cfg.Sample, Churn: s.cfg.ChurnPerNodeMinute, Incident: s.cfg.IncidentPeriod, Metrics: map[string]float64{}, Info: s.Info}
	if err := s.restartStorm(ctx, nil, r.Metrics); err != nil {
		return nil, err
	}
	r.Metrics["agents"] = 0
	return r, nil
}

// agentUsers is the set of users of the agents on nodes idx.
func agentUsers(idx []int) map[string]bool {
	users := make(map[string]bool, len(idx))
	for _, i := range idx {
		users[agentUser(i)] = true
	}
	return users
}

// perSecond counts users' requests received in [from, to) by consecutive
// 1-second windows starting at from, and returns the largest window, the
// 99th percentile window and the total.
func perSecond(events []controlplane.AuditEvent, users map[string]bool, from, to time.Time) (maxPer, p99 float64, total int) {
	n := int(math.Ceil(to.Sub(from).Seconds()))
	if n <= 0 || len(users) == 0 {
		return 0, 0, 0
	}
	counts := make([]float64, n)
	for _, e := range events {
		at := e.RequestReceivedTimestamp
		if !users[e.User.Username] || at.Before(from) || !at.Before(to) {
			continue
		}
		counts[int(at.Sub(from)/time.Second)]++
		total++
	}
	slices.Sort(counts)
	return counts[n-1], counts[min(n-1, int(math.Ceil(0.99*float64(n)))-1)], total
}

// restartStorm restarts the apiserver under the running agents and waits
// until every agent has had a successful request answered by the new one.
func (s *Session) restartStorm(ctx context.Context, idx []int, m map[string]float64) error {
	if _, err := s.audit.read(); err != nil {
		return err
	}
	if err := s.cp.StopAPIServer(); err != nil {
		return err
	}
	// Agents count as back from their first success after the new
	// process starts: some get through before /readyz passes.
	tStart := time.Now()
	storm := s.startStorm(ctx)
	if err := s.cp.StartAPIServer(ctx); err != nil {
		storm.stop()
		return err
	}
	tReady := time.Now()
	m["restart-ready-s"] = tReady.Sub(tStart).Seconds()
	want := agentUsers(idx)
	var n429 int
	// seen is each agent's first success on the new process.
	seen := map[string]time.Time{}
	err := wait.PollUntilContextTimeout(ctx, time.Second, s.cfg.SyncTimeout, true, func(context.Context) (bool, error) {
		events, err := s.audit.read()
		if err != nil {
			return false, err
		}
		n429 = 0
		for _, e := range events {
			if e.RequestReceivedTimestamp.Before(tStart) {
				continue
			}
			if e.Code() == 429 {
				n429++
			}
			if t, ok := seen[e.User.Username]; e.Code() >= 200 && e.Code() < 300 && (!ok || e.RequestReceivedTimestamp.Before(t)) {
				seen[e.User.Username] = e.RequestReceivedTimestamp
			}
		}
		return len(seen) >= len(want), nil
	})
	tDone := time.Now()
	if len(seen) >= len(want) {
		tDone = tStart
		for _, t := range seen {
			if t.After(tDone) {
				tDone = t
			}
		}
	}
	if err != nil {
		slog.Warn("bench: not every agent reached the restarted apiserver", "reached", len(seen), "of", len(want), "err", err)
	}
	// The observed window is the same for every strategy and the no-agent
	// baseline (at least restartObserve from readiness), and lasts past
	// the agents' relists and watches that follow their first success.
	tEnd := tReady.Add(s.cfg.RestartObserve)
	if t := time.Now().Add(restartTail); t.After(tEnd) {
		tEnd = t
	}
	if err := sleep(ctx, time.Until(tEnd)); err != nil {
		storm.stop()
		return err
	}
	ss := storm.stopSince(tReady)
	events, rerr := s.audit.read()
	if rerr != nil {
		return rerr
	}
	var total int
	m["restart-req-max-1s"], m["restart-req-p99-1s"], total = perSecond(events, want, tStart, tEnd)
	if len(want) > 0 {
		m["restart-req/node"] = float64(total) / float64(len(want))
	}
	m["restart-resync-s"] = tDone.Sub(tStart).Seconds()
	m["restart-peak-inflight"] = ss.peakInflight
	m["restart-peak-executing"] = ss.peakExecuting
	m["restart-429s"] = float64(n429)
	m["restart-probe-p99-ms"] = ss.p99ms
	m["restart-reached"] = float64(len(seen))
	return nil
}
