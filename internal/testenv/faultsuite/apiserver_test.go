package faultsuite

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/limiter"
)

// fastBackoff caps the backoff so that the suite's outages (seconds, not
// minutes) end in test time; the shape (jittered, exponential, breaker) is
// the production one.
func fastBackoff(c *limiter.Config) { c.MaxBackoff = 8 * time.Second }

// TestFleetSurvivesAPIServerRestart runs 30 agents sharing a 20 req/s
// fleet budget, kills the apiserver (SIGKILL, as a crash) for a short and
// for a long outage, and checks that every agent resumes on its own (a pod
// created after the restart reaches each node's cache) while the fleet's
// requests, read from the audit log, stay within FleetQPS plus
// FleetSize×Burst in every window: no relist storm.
func TestFleetSurvivesAPIServerRestart(t *testing.T) {
	checkLeaksAtEnd(t)
	const qps = 20.0
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	kub := startKubelet(t, "", nil)

	nodes := cluster.NodeNames()
	agents := make([]*agent.Agent, fleetSize)
	for i := range agents {
		// Exports every 10 s: 60 providers exporting every second would
		// saturate this 2-core machine under -race; the case is about
		// apiserver traffic.
		agents[i] = agentrig.New(t, agentrig.Options{CP: cp, Node: nodes[i], User: fleetUser(i), Receiver: recv, Kubelet: kub,
			Interval: 10 * time.Second, Limiter: fastBackoff,
			Config: func(c *agent.Config) { c.FleetQPS, c.FleetSize = qps, fleetSize }}).Agent
	}
	isFleet := func(u string) bool {
		var n int
		_, err := fmt.Sscanf(u, "fault-%02d", &n)
		return err == nil && strings.HasPrefix(u, "fault-") && len(u) == len("fault-00")
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for i, a := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := a.Shutdown(ctx); err != nil {
					t.Errorf("agent %d shutdown: %v", i, err)
				}
			}()
		}
		wg.Wait()
	})

	// Simultaneous start of the whole fleet, as after a rollout.
	startAt := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Start(ctx); err != nil {
				t.Errorf("agent %d start: %v", i, err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, 90*time.Second, "every agent syncs", func() bool {
		for _, a := range agents {
			if !a.Informers().HasSynced() {
				return false
			}
		}
		return true
	})
	burst := agents[0].Budget().Stats().Burst
	checkBudget(t, "fleet start", auditRate(t, startAt, time.Now(), isFleet), qps, fleetSize, burst)
	recv.Reset()
	base := liveHeap()

	for _, outage := range []struct {
		name string
		down time.Duration
	}{{"short", 2 * time.Second}, {"long", 12 * time.Second}} {
		killedAt := time.Now()
		if err := cp.KillAPIServer(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(outage.down)
		if err := cp.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		upAt := time.Now()
		pod := "after-" + outage.name
		for _, n := range nodes {
			createPod(t, pod+"-"+n, n)
		}
		waitFor(t, 120*time.Second, outage.name+" outage: every agent sees the pod created after the restart", func() bool {
			for i, a := range agents {
				if !hasPod(a, pod+"-"+nodes[i]) {
					return false
				}
			}
			return true
		})
		recovered := time.Now()
		rep := auditRate(t, killedAt, recovered, isFleet)
		checkBudget(t, outage.name+" outage recovery", rep, qps, fleetSize, burst)
		if rep.EmptyRV > 0 {
			t.Errorf("%s outage: %d LISTs with an empty resourceVersion (etcd reads) during recovery", outage.name, rep.EmptyRV)
		}
		// Jitter: when each agent's first request after the restart
		// reached the apiserver.
		events, err := cp.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		first := map[string]time.Time{}
		for _, e := range events {
			u := e.User.Username
			if isFleet(u) && !e.RequestReceivedTimestamp.Before(upAt) {
				if _, ok := first[u]; !ok {
					first[u] = e.RequestReceivedTimestamp
				}
			}
		}
		var lo, hi time.Time
		for _, at := range first {
			if lo.IsZero() || at.Before(lo) {
				lo = at
			}
			if at.After(hi) {
				hi = at
			}
		}
		var throttled, conn, backoffs, expired, relists int64
		for _, a := range agents {
			s := a.Budget().Stats()
			throttled, conn, backoffs = throttled+s.Throttled, conn+s.ConnErrors, backoffs+s.Backoffs
			is := a.Informers().Stats().Total()
			expired, relists = expired+is.Expired, relists+is.Relists
		}
		t.Logf("%s outage (%v down): apiserver up after %v, all %d agents resumed %v after it; first requests after restart spread over %v; totals so far: conn errors %d, 429s %d, backoffs %d, 410s %d, relists %d",
			outage.name, outage.down, upAt.Sub(killedAt).Round(time.Millisecond), fleetSize, recovered.Sub(upAt).Round(time.Millisecond),
			hi.Sub(lo).Round(time.Millisecond), conn, throttled, backoffs, expired, relists)
		recv.Reset()
		checkHeap(t, "after the "+outage.name+" outage", base, liveHeap(), 48)
	}
}

// TestWatchGoneAfterCompaction cuts an agent off, writes elsewhere,
// compacts etcd and restarts the apiserver, so that the agent's
// resourceVersion is older than anything the apiserver keeps: a resumed
// watch from it is answered 410 Gone. The agent must relist from the watch
// cache (never resourceVersion="", an etcd read) and watch on, within its
// budget.
func TestWatchGoneAfterCompaction(t *testing.T) {
	checkLeaksAtEnd(t)
	nodes := cluster.NodeNames()
	r := newRig(t, goneUser, nodes[0], rigOptions{viaProxy: true, fleetQPS: 20, fleetSize: 2, limiter: fastBackoff})
	r.start(t)
	base := liveHeap()
	st0 := r.Agent.Informers().Stats()

	r.apiProxy.Down()
	for i := 0; i < 5; i++ {
		createPod(t, fmt.Sprintf("gone-elsewhere-%d", i), nodes[1])
	}
	rev := compactEtcd(t)
	if err := cp.KillAPIServer(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	waitRBAC(t, r.Node)
	since := time.Now()
	r.apiProxy.Up(t)
	createPod(t, "gone-after", r.Node)
	waitFor(t, 90*time.Second, "the agent sees a pod created after the 410", func() bool { return hasPod(r.Agent, "gone-after") })
	st := r.Agent.Informers().Stats()
	t.Logf("etcd compacted at revision %d; pod informer before %+v, after %+v", rev, st0.Pods, st.Pods)
	// Two correct paths, depending on how client-go's reflector classified
	// the failures while the agent was cut off: a watch that ended and
	// was refused re-opens from the last resourceVersion and meets the 410;
	// a watch attempt failed with another error (such as the budget's open
	// breaker) makes it relist first, from the last resourceVersion, which
	// the restarted watch cache serves. Either way: no etcd read, no loop.
	switch {
	case st.Pods.Expired > st0.Pods.Expired && st.Pods.Relists > st0.Pods.Relists:
		t.Logf("path: the resumed watch got 410 Gone, then the agent relisted from its last resourceVersion")
	case st.Pods.Relists > st0.Pods.Relists:
		t.Logf("path: the agent relisted from its last resourceVersion before re-watching (no 410 needed)")
	default:
		t.Errorf("neither a 410 nor a relist after compaction and restart: before %+v, after %+v", st0.Pods, st.Pods)
	}
	rep := auditRate(t, since, time.Now(), func(u string) bool { return u == goneUser })
	checkBudget(t, "recovery after compaction", rep, 10, 1, r.Agent.Budget().Stats().Burst)
	if rep.EmptyRV > 0 {
		t.Errorf("%d LISTs with resourceVersion=\"\" after the 410: the relist must be served by the watch cache", rep.EmptyRV)
	}
	r.WaitExport(t, 30*time.Second, "pod state exported after the 410", hasMetric("k8s.pod.status.phase"))
	r.Recv.Reset()
	checkHeap(t, "after the 410", base, liveHeap(), 16)
	r.Stop(t)
}

// compactEtcd compacts etcd at its current revision through its gRPC
// gateway (plain HTTP+JSON, so the suite needs no etcd client module) and
// returns the revision.
func compactEtcd(t *testing.T) int64 {
	t.Helper()
	var rng struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	etcdPost(t, "/v3/kv/range", map[string]any{"key": "Lw=="}, &rng) // key "/"
	var rev int64
	if _, err := fmt.Sscan(rng.Header.Revision, &rev); err != nil || rev == 0 {
		t.Fatalf("etcd revision %q: %v", rng.Header.Revision, err)
	}
	etcdPost(t, "/v3/kv/compaction", map[string]any{"revision": rev, "physical": true}, nil)
	return rev
}

func etcdPost(t *testing.T, path string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(cp.EtcdURL()+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("etcd %s: %v", path, err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("etcd %s: %s: %s", path, resp.Status, raw.String())
	}
	if out != nil {
		if err := json.Unmarshal(raw.Bytes(), out); err != nil {
			t.Fatalf("etcd %s: %v: %s", path, err, raw.String())
		}
	}
}

// TestAPFRejection puts the agent's user into an APF priority level that
// rejects (no seats, held by a hog), cuts the agent's connections so that
// it must re-watch and relist into the 429s, and keeps it so for many
// seconds. The agent keeps exporting kubelet metrics, stays inside its
// budget (audit log) and resumes on its own once the FlowSchema is gone.
func TestAPFRejection(t *testing.T) {
	checkLeaksAtEnd(t)
	const qps = 4.0
	nodes := cluster.NodeNames()
	r := newRig(t, apfUser, nodes[2], rigOptions{viaProxy: true, fleetQPS: 2 * qps, fleetSize: 2, limiter: fastBackoff})
	r.start(t)
	base := liveHeap()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	liftAPF, err := cp.RejectUsers(ctx, "fleetagent-fault-reject", apfUser, hogUser)
	if err != nil {
		t.Fatal(err)
	}
	lifted := false
	lift := func() {
		if lifted {
			return
		}
		lifted = true
		if err := liftAPF(ctx); err != nil {
			t.Errorf("lift the APF rejection: %v", err)
		}
	}
	defer lift()
	// The hog holds the rejecting level's only seat (a level with no seats
	// still admits one request when nothing else executes in it).
	release, err := cp.HoldSeat(ctx, "fault-hog", hogUser)
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	throttleFrom := time.Now()
	// Cut the agent's watches repeatedly: each cut makes it re-watch (and
	// relist), into the 429s.
	waitFor(t, 60*time.Second, "the agent meets 429s", func() bool {
		r.apiProxy.Cut()
		return r.Agent.Budget().Stats().Throttled > 0
	})
	sustainUntil := time.Now().Add(10 * time.Second)
	exportsBefore := r.Agent.ExportStats().Exports
	for time.Now().Before(sustainUntil) {
		r.apiProxy.Cut()
		time.Sleep(2 * time.Second)
	}
	st := r.Agent.Budget().Stats()
	if r.Agent.ExportStats().Exports <= exportsBefore {
		t.Errorf("no exports while the apiserver answered 429 (kubelet metrics must go on): %+v", r.Agent.ExportStats())
	}
	if st.BreakerOpens == 0 && !st.BackingOff {
		t.Errorf("sustained 429s neither opened the breaker nor put the agent in backoff: %+v", st)
	}
	release()
	lift()
	liftedAt := time.Now()
	createPod(t, "apf-after", r.Node)
	waitFor(t, 90*time.Second, "the agent resumes after the FlowSchema is deleted", func() bool { return hasPod(r.Agent, "apf-after") })
	t.Logf("429s %d, backoffs %d, breaker opens %d, retry-after %v; resumed %v after the limit was lifted",
		st.Throttled, st.Backoffs, st.BreakerOpens, st.LastRetryAfter, time.Since(liftedAt).Round(time.Millisecond))
	checkBudget(t, "under APF rejection and recovery", auditRate(t, throttleFrom, time.Now(), func(u string) bool { return u == apfUser }), qps, 1, st.Burst)
	r.Recv.Reset()
	checkHeap(t, "after sustained 429s", base, liveHeap(), 16)
	r.Stop(t)
}

// TestSlowAPIServer puts a second of latency on every chunk between the
// agent and the apiserver (a proxy the test owns), in both directions,
// from before the agent starts: it must start and sync through the slow
// path, follow changes through it, re-watch through it after its
// connections are cut, keep exporting kubelet metrics meanwhile, stay
// within its budget, and be current again once the latency goes.
func TestSlowAPIServer(t *testing.T) {
	checkLeaksAtEnd(t)
	nodes := cluster.NodeNames()
	r := newRig(t, slowUser, nodes[3], rigOptions{viaProxy: true, fleetQPS: 20, fleetSize: 2, limiter: fastBackoff})
	from := time.Now()
	r.apiProxy.SetDelay(time.Second)
	r.start(t)
	base := liveHeap()
	synced := time.Since(from)

	createPod(t, "slow-1", r.Node)
	waitFor(t, 60*time.Second, "a change reaches the agent through the slow path", func() bool { return hasPod(r.Agent, "slow-1") })
	exportsBefore := r.Agent.ExportStats().Exports
	r.apiProxy.Cut()
	createPod(t, "slow-2", r.Node)
	waitFor(t, 60*time.Second, "the agent re-watches through the slow path after a cut", func() bool { return hasPod(r.Agent, "slow-2") })
	if r.Agent.ExportStats().Exports <= exportsBefore {
		t.Errorf("no exports while the apiserver was slow: %+v", r.Agent.ExportStats())
	}
	st := r.Agent.Budget().Stats()
	r.apiProxy.SetDelay(0)
	createPod(t, "slow-after", r.Node)
	waitFor(t, 60*time.Second, "the agent is current after the latency goes", func() bool { return hasPod(r.Agent, "slow-after") })
	t.Logf("synced through the slow path in %v; requests %v, slow responses %d, backoffs %d, conn errors %d",
		synced.Round(time.Millisecond), st.Requests, st.Slow, st.Backoffs, st.ConnErrors)
	checkBudget(t, "slow apiserver", auditRate(t, from, time.Now(), func(u string) bool { return u == slowUser }), 10, 1, st.Burst)
	r.Recv.Reset()
	checkHeap(t, "after the slow apiserver", base, liveHeap(), 16)
	r.Stop(t)
}
