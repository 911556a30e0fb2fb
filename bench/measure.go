package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/limiter"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Measure runs the strategy's agents on the session's cluster: all start at
// once (the start-up storm), then a steady window, then, at the restart
// size, an apiserver restart under them.
func (s *Session) Measure(ctx context.Context, st Strategy) (*Result, error) {
	if st.NoAgents {
		return s.measureNoAgent(ctx, st)
	}
	idx := s.agentNodes(st)
	k := len(idx)
	env := Env{IncidentPeriod: s.cfg.IncidentPeriod, Rand: rand.New(rand.NewPCG(uint64(k), 7)), RandMu: &sync.Mutex{}, FleetSizeHintPath: s.hintPath, SyncTimeout: s.cfg.SyncTimeout}
	if st.Kubelet {
		// Before the audit log is skipped and the first scrape: the admin
		// LIST that fills the stand-in is not the strategy's cost.
		u, err := s.kubeletURL(ctx)
		if err != nil {
			return nil, err
		}
		env.KubeletURL = u
	}
	agents := make([]Agent, k)
	for j, i := range idx {
		a, err := st.New(s.cp.UserConfig(agentUser(i)), s.cluster.NodeNames()[i], env)
		if err != nil {
			return nil, err
		}
		agents[j] = a
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shutdownAll(sctx, agents)
	}()
	r := &Result{Strategy: st.Name, Nodes: s.nodes, Agents: k, PodsPerNode: s.cfg.PodsPerNode, Window: s.cfg.Window,
		EtcdNet: true, Repeats: s.cfg.Repeats, Sample: s.cfg.Sample, Churn: s.cfg.ChurnPerNodeMinute, Incident: s.cfg.IncidentPeriod, Metrics: map[string]float64{}, Info: s.Info}
	m := r.Metrics

	if err := s.audit.skip(); err != nil {
		return nil, err
	}
	runtime.GC()
	heap0 := heapAlloc()
	m0, err := s.scrape(ctx)
	if err != nil {
		return nil, err
	}
	// Start-up storm: every agent at once.
	storm := s.startStorm(ctx)
	t0 := time.Now()
	synced, syncErr := startAll(ctx, agents, s.cfg.SyncTimeout)
	tSync := time.Now()
	ss := storm.stop()
	r.Synced = synced
	if syncErr != nil {
		slog.Warn("bench: not every agent synced", "strategy", st.Name, "nodes", s.nodes, "synced", synced, "of", k, "err", syncErr)
	}
	m1, err := s.scrape(ctx)
	if err != nil {
		return nil, err
	}
	su := tSync.Sub(t0).Seconds()
	m["storm-sync-s"] = su
	m["storm-peak-inflight"] = ss.peakInflight
	m["storm-peak-executing"] = ss.peakExecuting
	m["storm-probe-p99-ms"] = ss.p99ms
	d0 := m1.at.Sub(m0.at).Seconds()
	m["startup-cpu-ms/node"] = ((m1.cpu - m0.cpu) - s.base.cpu*d0) * 1000 / float64(k)
	m["startup-etcd-req/node"] = ((m1.etcd - m0.etcd) - s.base.etcd*d0) / float64(k)
	lb0, _ := s.loopback(m0, m1)
	m["startup-B/node"] = ((m1.bytes - m0.bytes) - lb0) / float64(k)
	m["startup-init-events/node"] = (m1.initEvents - m0.initEvents) / float64(k)

	// The start ends when every agent's watches are open: the watches
	// follow the sync and pay from the same budget.
	tStarted := tSync
	if st.Watches > 0 {
		if tStarted, err = s.waitWatches(ctx, agentUsers(idx), st.Watches, t0); err != nil {
			// No figure: the steady window that follows may hold the
			// start's tail, and the log says so.
			slog.Warn("bench: not every agent's watches stayed open within the sync timeout; the steady window may hold start-up requests", "strategy", st.Name, "nodes", s.nodes, "err", err)
		} else {
			m["start-watches-s"] = tStarted.Sub(t0).Seconds()
		}
	}
	if err := sleep(ctx, s.cfg.Settle); err != nil {
		return nil, err
	}
	type window struct{ from, to scrape }
	var windows []window
	prev, err := s.scrape(ctx)
	if err != nil {
		return nil, err
	}
	for range s.cfg.Repeats {
		if err := sleep(ctx, s.cfg.Window/time.Duration(s.cfg.Repeats)); err != nil {
			return nil, err
		}
		cur, err := s.scrape(ctx)
		if err != nil {
			return nil, err
		}
		windows = append(windows, window{prev, cur})
		prev = cur
	}
	runtime.GC()
	m["heap-B/node"] = float64(int64(heapAlloc())-int64(heap0)) / float64(k)

	events, err := s.audit.read()
	if err != nil {
		return nil, err
	}
	r.StartupRequests, r.SteadyRequests = map[string]int{}, map[string]int{}
	var startupReq, startup429 int
	steadyReq := make([]float64, len(windows))
	for _, e := range events {
		if isClusterScopedPodRead(e) {
			r.ClusterScopedPodReads++
		}
		at := e.RequestReceivedTimestamp
		switch {
		case !at.After(tSync) && !at.Before(t0.Add(-time.Second)):
			startupReq++
			r.StartupRequests[kind(e)]++
			if e.Code() == 429 {
				startup429++
			}
		case !at.Before(windows[0].from.at) && at.Before(windows[len(windows)-1].to.at):
			r.SteadyRequests[kind(e)]++
			for i, w := range windows {
				if !at.Before(w.from.at) && at.Before(w.to.at) {
					steadyReq[i]++
				}
			}
		}
	}
	m["startup-req/node"] = float64(startupReq) / float64(k)
	// Every request of the agents from their start to the end of the
	// steady window, wherever it falls (a strategy meant to send none
	// shows 0 here).
	m["audit-req/node"] = float64(len(events)) / float64(k)
	m["storm-429s"] = float64(startup429)
	// The fleet's requests per 1-second window from the first start: what
	// the fleet budget bounds.
	m["start-req-max-1s"], m["start-req-p99-1s"], _ = perSecond(events, agentUsers(idx), t0, tStarted.Add(time.Second))
	if st.FleetQPS > 0 {
		m["fleet-qps"] = st.FleetQPS
		m["fleet-allowance-1s"] = float64(limiter.Allowance(st.FleetQPS))
	}

	per := func(name string, vals []float64) {
		med, spread := medianSpread(vals)
		m[name] = med
		m[strings.Replace(name, "/", "-spread/", 1)] = spread
	}
	var req, byt, cpu, etcd, ev []float64
	for i, w := range windows {
		mins := w.to.at.Sub(w.from.at).Minutes()
		secs := mins * 60
		norm := func(v float64) float64 { return v / float64(k) / mins }
		req = append(req, norm(steadyReq[i]))
		// What the apiserver's own loopback informers receive is
		// subtracted per churn event; CPU has no owner at all, so the
		// churn-only baseline rate is subtracted.
		lbBytes, lbEvents := s.loopback(w.from, w.to)
		byt = append(byt, norm((w.to.bytes-w.from.bytes)-lbBytes))
		cpu = append(cpu, norm(((w.to.cpu-w.from.cpu)-s.base.cpu*secs)*1000))
		// The apiserver also reads etcd on its own (a few lists a minute
		// at these sizes): the churn-only rate is subtracted.
		etcd = append(etcd, norm((w.to.etcd-w.from.etcd)-s.base.etcd*secs))
		ev = append(ev, norm((w.to.events-w.from.events)-lbEvents))
	}
	per("req/node", req)
	per("B/node", byt)
	per("cpu-ms/node", cpu)
	per("etcd-req/node", etcd)
	per("watch-events/node", ev)

	if s.restartHere(st.Name) {
		if err := s.restartStorm(ctx, idx, m); err != nil {
			return nil, err
		}
	}
	m["agents"] = float64(k)
	return r, nil
}

// agentNodes picks the nodes that run an agent: all of them, or for a
// cluster-scoped strategy an evenly spread sample.
func (s *Session) agentNodes(st Strategy) []int {
	k := s.nodes
	if st.ClusterScoped && s.cfg.Sample > 0 && k > s.cfg.Sample {
		k = s.cfg.Sample
	}
	idx := make([]int, k)
	for j := range idx {
		idx[j] = j * s.nodes / k
	}
	return idx
}

func isClusterScopedPodRead(e controlplane.AuditEvent) bool {
	if e.Resource() != "pods" || (e.Verb != "list" && e.Verb != "watch") {
		return false
	}
	return e.ObjectRef.Namespace == "" && e.Query().Get("fieldSelector") == ""
}

// kind groups requests for the report: verb, resource and the shape of the
// query that decides the cost.
func kind(e controlplane.AuditEvent) string {
	q := e.Query()
	var parts []string
	parts = append(parts, e.Verb, e.Resource())
	if fs := q.Get("fieldSelector"); fs != "" {
		parts = append(parts, "fieldSelector="+strings.SplitN(fs, "=", 2)[0])
	} else if e.Verb == "list" || e.Verb == "watch" {
		parts = append(parts, "cluster-wide")
	}
	if q.Has("resourceVersion") || e.Verb == "list" || e.Verb == "get" {
		rv := q.Get("resourceVersion")
		switch rv {
		case "", "0":
			parts = append(parts, "rv="+url.QueryEscape(rv))
		default:
			parts = append(parts, "rv=N")
		}
	}
	if q.Get("sendInitialEvents") == "true" {
		parts = append(parts, "sendInitialEvents")
	}
	if e.Code() != 200 && e.Code() != 0 {
		parts = append(parts, fmt.Sprintf("code=%d", e.Code()))
	}
	return strings.Join(parts, " ")
}

// startAll starts every agent at once and waits for all to sync. It
// returns how many synced.
func startAll(ctx context.Context, agents []Agent, timeout time.Duration) (int, error) {
	// The agents live on ctx; only the wait for sync is bounded.
	syncCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	synced := 0
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.Start(ctx)
			if err == nil {
				err = a.WaitForSync(syncCtx)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				synced++
			}
		}()
	}
	wg.Wait()
	return synced, errors.Join(errs...)
}

func shutdownAll(ctx context.Context, agents []Agent) {
	var wg sync.WaitGroup
	for _, a := range agents {
		if a == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Shutdown(ctx); err != nil {
				slog.Warn("bench: agent shutdown", "err", err)
			}
		}()
	}
	wg.Wait()
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// medianSpread is the median and the max-min range of vals.
func medianSpread(vals []float64) (float64, float64) {
	if len(vals) == 0 {
		return 0, 0
	}
	v := append([]float64(nil), vals...)
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return med, v[len(v)-1] - v[0]
}

// watchOpenFor is how long a watch must have stayed open to count as open:
// one the apiserver refuses (too old a resourceVersion) ends within
// milliseconds of its start.
const watchOpenFor = 5 * time.Second

// waitWatches waits until the audit log shows, for every one of users, n
// watches opened since t0 that are still open and have been for
// watchOpenFor, and returns when the last of them opened; bounded by the
// sync timeout. A steady window that starts later holds none of the
// start-up's requests, including the relists of watches that failed.
func (s *Session) waitWatches(ctx context.Context, users map[string]bool, n int, t0 time.Time) (time.Time, error) {
	last := t0
	err := wait.PollUntilContextTimeout(ctx, time.Second, s.cfg.SyncTimeout, true, func(context.Context) (bool, error) {
		events, err := s.audit.read()
		if err != nil {
			return false, err
		}
		open, at := openWatches(events, s.audit.endedWatches(), users, t0, time.Now(), watchOpenFor)
		for u := range users {
			if open[u] < n {
				return false, nil
			}
		}
		last = at
		return true, nil
	})
	return last, err
}
