package bench_test

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/bench"
)

// flagConfig reads the -bench.* flags.
var flagConfig = bench.RegisterFlags(flag.CommandLine)

// BenchmarkAPIServerLoad measures every strategy the main module builds at
// the sizes given by -bench.nodes. `make bench` runs the bench/k8sattr
// module's copy instead, which adds otel-k8sattributes.
func BenchmarkAPIServerLoad(b *testing.B) {
	cfg, err := flagConfig()
	if err != nil {
		b.Fatal(err)
	}
	bench.Run(b, cfg, bench.DefaultStrategies())
}

// TestAPIServerLoadSmall runs every strategy once on a 10-node cluster with
// short windows, so that the benchmark cannot rot, and checks the claims the
// benchmark exists to show.
func TestAPIServerLoadSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := bench.Config{
		Nodes: []int{10}, PodsPerNode: 30, Window: 4 * time.Second, Repeats: 2, Settle: 500 * time.Millisecond,
		Sample: 10, ChurnPerNodeMinute: 3, IncidentPeriod: 2 * time.Second, SyncTimeout: time.Minute,
		// One restart storm keeps that code path under test; each costs an
		// apiserver restart.
		RestartNodes: 10, RestartStrategies: []string{"no-agent", "fleetagent"}, RestartObserve: 5 * time.Second,
	}
	s, err := bench.NewSession(ctx, cfg, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	results := map[string]*bench.Result{}
	for _, st := range bench.DefaultStrategies() {
		r, err := s.Measure(ctx, st)
		if err != nil {
			t.Fatalf("%s: %v", st.Name, err)
		}
		t.Logf("%s: %v startup=%v steady=%v", st.Name, r.Metrics, r.StartupRequests, r.SteadyRequests)
		results[st.Name] = r
		if r.Synced != r.Agents || (r.Agents == 0) != st.NoAgents {
			t.Errorf("%s: %d of %d agents synced", st.Name, r.Synced, r.Agents)
		}
		if v, ok := r.Metrics["restart-reached"]; ok && v != float64(r.Agents) {
			t.Errorf("%s: %v of %d agents reached the restarted apiserver", st.Name, r.Metrics["restart-reached"], r.Agents)
		}
	}
	inc, ci, wl := results["incident"], results["cluster-informer"], results["watchlist"]
	if inc.ClusterScopedPodReads == 0 || ci.ClusterScopedPodReads == 0 {
		t.Errorf("incident (%d) and cluster-informer (%d) must read pods cluster-wide", inc.ClusterScopedPodReads, ci.ClusterScopedPodReads)
	}
	if wl.ClusterScopedPodReads != 0 {
		t.Errorf("watchlist made %d cluster-scoped pod reads", wl.ClusterScopedPodReads)
	}
	// A streaming list walks the whole store: 300 pods here, not this
	// node's 30.
	if got := wl.Metrics["startup-init-events/node"]; got < 300 {
		t.Errorf("watchlist startup-init-events/node = %v, want >= 300 (every pod in the cluster)", got)
	}
	if inc.Metrics["req/node"] <= 0 {
		t.Errorf("incident req/node = %v, want > 0: it relists every %v", inc.Metrics["req/node"], cfg.IncidentPeriod)
	}
	if got := inc.Metrics["etcd-req/node"]; got <= 0 {
		t.Errorf("incident etcd-req/node = %v, want > 0 (LIST with resourceVersion=\"\" is a consistent read)", got)
	}
	fa := results["fleetagent"]
	if fa.ClusterScopedPodReads != 0 {
		t.Errorf("fleetagent made %d cluster-scoped pod reads", fa.ClusterScopedPodReads)
	}
	if fa.Metrics["req/node"] >= inc.Metrics["req/node"] {
		t.Errorf("fleetagent req/node %v, want below incident's %v", fa.Metrics["req/node"], inc.Metrics["req/node"])
	}
	if got := fa.Metrics["startup-init-events/node"]; got >= 300 {
		t.Errorf("fleetagent startup-init-events/node = %v: it must not walk the whole store", got)
	}
	if got := fa.Metrics["etcd-req/node"]; got >= inc.Metrics["etcd-req/node"] {
		t.Errorf("fleetagent etcd-req/node %v, want below incident's %v", got, inc.Metrics["etcd-req/node"])
	}
	if _, ok := fa.Metrics["restart-resync-s"]; !ok {
		t.Errorf("fleetagent ran no restart storm")
	}
	// The fleet budget, per 1-second window, at the start and after the
	// restart (10 agents: far inside it; the bench at 100, 1000 and 5000
	// agents measures the bound).
	bound := fa.Metrics["fleet-qps"] + fa.Metrics["fleet-allowance-1s"]
	if bound != 100+74 {
		t.Errorf("fleetagent budget per second %v, want the default --fleet-qps 100 + allowance 74", bound)
	}
	for _, m := range []string{"start-req-max-1s", "restart-req-max-1s"} {
		if v, ok := fa.Metrics[m]; !ok || v <= 0 || v > bound {
			t.Errorf("fleetagent %s = %v (present %v), want within (0, %v]", m, v, ok, bound)
		}
	}
	if v := fa.Metrics["restart-req/node"]; v < 2 {
		t.Errorf("fleetagent restart-req/node = %v: each agent re-opens at least its two watches", v)
	}
	// The steady window starts after every agent's watches are open: with
	// churn arriving over its open watches, an agent sends nothing in it.
	if _, ok := fa.Metrics["start-watches-s"]; !ok || len(fa.SteadyRequests) != 0 {
		t.Errorf("fleetagent: watches open after %v s (measured: %v), steady requests %v: want none", fa.Metrics["start-watches-s"], ok, fa.SteadyRequests)
	}
	// The kubelet source: no apiserver request at all, at start or steady,
	// in the same run as the others (audit log).
	fk := results["fleetagent-kubelet"]
	for _, m := range []string{"audit-req/node", "startup-req/node", "req/node"} {
		if v, ok := fk.Metrics[m]; !ok || v != 0 {
			t.Errorf("fleetagent-kubelet %s = %v (present %v), want 0", m, v, ok)
		}
	}
	if len(fk.StartupRequests) != 0 || len(fk.SteadyRequests) != 0 || fk.ClusterScopedPodReads != 0 {
		t.Errorf("fleetagent-kubelet requests: start-up %v, steady %v: want none", fk.StartupRequests, fk.SteadyRequests)
	}
	if na := results["no-agent"]; na == nil || na.Agents != 0 || na.Metrics["restart-probe-p99-ms"] <= 0 {
		t.Errorf("no-agent baseline: %+v, want a restart with no agent and its admin probe p99", na)
	}
}
