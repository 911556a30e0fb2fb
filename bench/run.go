package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"testing"
	"time"
)

// Run is BenchmarkAPIServerLoad: for each size in cfg (the -bench.* flags), one
// control plane and cluster, then each strategy measured on it as
// sub-benchmark strategy=<name>/nodes=<n>. Modules that add strategies
// (bench/k8sattr) call it with theirs appended.
func Run(b *testing.B, cfg Config, strategies []Strategy) {
	strategies = Select(strategies, cfg.Strategies)
	if len(strategies) == 0 {
		b.Fatalf("no strategy matches -bench.strategies=%v", cfg.Strategies)
	}
	sizes := append([]int(nil), cfg.Nodes...)
	sort.Ints(sizes)
	ctx := context.Background()
	for _, n := range sizes {
		var s *Session
		for _, st := range strategies {
			if st.NoAgents && !cfg.restartAt(n, st.Name) {
				continue
			}
			name := fmt.Sprintf("strategy=%s/nodes=%d", st.Name, n)
			if ok, why := fits(st, cfg, n, memTotal()); !ok {
				b.Run(name, func(b *testing.B) { b.Skip(why) })
				continue
			}
			b.Run(name, func(b *testing.B) {
				if s == nil {
					// Built lazily so that a -bench filter that skips a size
					// does not pay for its cluster.
					start := time.Now()
					var err error
					if s, err = NewSession(ctx, cfg, n); err != nil {
						b.Fatalf("nodes=%d: %v", n, err)
					}
					b.Logf("nodes=%d: control plane, %d pods (built in %v), baseline in %v", n, s.Info.Pods, s.Info.Build.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
				}
				for range b.N {
					r, err := s.Measure(ctx, st)
					if err != nil {
						b.Fatalf("%s: %v", name, err)
					}
					Report(b, r)
					if err := AppendJSON(cfg.JSON, r); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		if s != nil {
			s.Close()
		}
	}
}

// heldPodBytes is what one pod costs an agent that holds the cluster's
// pods decoded: cluster-informer's cache held 335 MB per agent over 30,000
// pods at 1000 nodes (bench/RESULTS.md).
const heldPodBytes = 11.2e3

// fits says whether st's agents fit in this machine's memory at n nodes,
// and why not. Only strategies that hold every pod of the cluster at once
// are checked: their agents (the sample, at large sizes) together may use
// at most half of memTotal, the rest being the kube-apiserver's, etcd's and
// the cluster's. At 5000 nodes and 30 pods per node their 20 agents would
// hold ~33.5 GB; at 1000 nodes ~6.7 GB, which ran on 24 GiB.
func fits(st Strategy, cfg Config, n int, memTotal uint64) (bool, string) {
	if !st.HoldsClusterPods || memTotal == 0 {
		return true, ""
	}
	agents := n
	if st.ClusterScoped && cfg.Sample > 0 {
		agents = min(n, cfg.Sample)
	}
	need := float64(agents) * float64(n*cfg.PodsPerNode) * heldPodBytes
	if need <= float64(memTotal)/2 {
		return true, ""
	}
	return false, fmt.Sprintf("%s not run at %d nodes: each of its %d agents holds all %d pods decoded, about %.1f GB together at %.1f kB a pod (measured at 1000 nodes), above half of this machine's %.1f GB",
		st.Name, n, agents, n*cfg.PodsPerNode, need/1e9, heldPodBytes/1e3, float64(memTotal)/1e9)
}

// memTotal is the machine's memory in bytes from /proc/meminfo (whose first
// line is MemTotal), 0 when it cannot be read (then nothing is skipped).
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb uint64
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err != nil {
		return 0
	}
	return kb * 1024
}

// Select keeps the strategies named in names, all of them when names is
// empty.
func Select(all []Strategy, names []string) []Strategy {
	if len(names) == 0 {
		return all
	}
	var out []Strategy
	for _, s := range all {
		if slices.Contains(names, s.Name) {
			out = append(out, s)
		}
	}
	return out
}

// Report hands r's figures to the testing package, sorted by unit.
func Report(b *testing.B, r *Result) {
	// Wall time per iteration means nothing here.
	b.ReportMetric(0, "ns/op")
	units := make([]string, 0, len(r.Metrics))
	for u := range r.Metrics {
		units = append(units, u)
	}
	sort.Strings(units)
	for _, u := range units {
		b.ReportMetric(r.Metrics[u], u)
	}
	b.Logf("%s nodes=%d agents=%d synced=%d: startup requests %v; steady requests %v", r.Strategy, r.Nodes, r.Agents, r.Synced, r.StartupRequests, r.SteadyRequests)
}

// AppendJSON appends r as one JSON line to path; an empty path does nothing.
func AppendJSON(path string, r *Result) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bench: results file: %w", err)
	}
	defer f.Close()
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	return err
}
