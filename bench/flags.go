// Package bench measures what node agents cost the kube-apiserver per node
// as a cluster grows, on a real etcd and kube-apiserver with a simulated
// cluster: the product's informers and limiter side by side with the
// patterns that took real clusters down.
//
// Every agent runs in this process with its own user, so the audit log
// attributes each request and APF sees separate clients. Figures are per
// node (per agent) and per minute; see RESULTS.md for how they are made.
package bench

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config sets the sizes and windows of a run. The flags fill DefaultConfig;
// tests build their own.
type Config struct {
	// Nodes are the cluster sizes, smallest first.
	Nodes []int
	// PodsPerNode is the number of pods bound to each node.
	PodsPerNode int
	// Strategies filters strategies by name; empty means all given.
	Strategies []string
	// Window is the steady-state measurement window, split into Repeats
	// sub-windows whose median and spread are reported.
	Window  time.Duration
	Repeats int
	// Settle is the pause between sync and the steady window.
	Settle time.Duration
	// Sample caps the agents of cluster-scoped strategies.
	Sample int
	// ChurnPerNodeMinute is pod replacements per node per minute; status
	// updates (container restarts) run at twice that rate.
	ChurnPerNodeMinute float64
	// IncidentPeriod is the incident strategy's mean relist period.
	IncidentPeriod time.Duration
	// RestartNodes is the size at which the apiserver-restart storm runs;
	// zero means the largest size, negative means never.
	RestartNodes int
	// RestartObserve is the shortest window observed after the restarted
	// apiserver is ready, the same with agents and without.
	RestartObserve time.Duration
	// RestartStrategies limits the restart storm to these strategies;
	// empty means all.
	RestartStrategies []string
	// JSON, when set, receives one JSON line per result for cmd/report.
	JSON string
	// SyncTimeout bounds the wait for every agent to sync.
	SyncTimeout time.Duration
}

// RegisterFlags defines the -bench.* flags on fs and returns the function
// that turns them into a Config once fs is parsed (inside a benchmark).
// The library defines no flags of its own: only the benchmark binaries
// that call this have them.
func RegisterFlags(fs *flag.FlagSet) func() (Config, error) {
	flagNodes := fs.String("bench.nodes", "10,100,300", "comma-separated cluster sizes (nodes); 1000 takes ~20 min on 2 cores, see RESULTS.md")
	flagPods := fs.Int("bench.pods", 30, "pods per node")
	flagStrategies := fs.String("bench.strategies", "", "comma-separated strategy names (empty: all)")
	flagWindow := fs.Duration("bench.window", 15*time.Second, "steady-state window per strategy and size")
	flagRepeats := fs.Int("bench.repeats", 3, "sub-windows of the steady window (median and spread)")
	flagSettle := fs.Duration("bench.settle", 3*time.Second, "pause between sync and the steady window")
	flagSample := fs.Int("bench.sample", 20, "agents run by cluster-scoped strategies at sizes above this")
	flagChurn := fs.Float64("bench.churn", 0.25, "pod replacements per node per minute (status updates run at 2x)")
	flagIncident := fs.Duration("bench.incident-period", 20*time.Second, "incident strategy's mean relist period")
	flagRestart := fs.Int("bench.restart-nodes", 100, "size for the apiserver-restart storm (0: largest, -1: never); 100 keeps the default run within 15 minutes")
	flagRestartObs := fs.Duration("bench.restart-observe", 20*time.Second, "shortest window observed after the restarted apiserver is ready (agents' requests per second, admin probe)")
	flagRestartSt := fs.String("bench.restart-strategies", "", "comma-separated strategies that get the restart storm (empty: all)")
	flagJSON := fs.String("bench.json", "", "append one JSON line per result to this file (for cmd/report)")
	flagSync := fs.Duration("bench.sync-timeout", 5*time.Minute, "bound on every agent syncing")

	return func() (Config, error) {
		var nodes []int
		for _, s := range strings.Split(*flagNodes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n <= 0 {
				return Config{}, fmt.Errorf("-bench.nodes=%q: want comma-separated positive integers", *flagNodes)
			}
			nodes = append(nodes, n)
		}
		var strategies, restartStrategies []string
		if *flagStrategies != "" {
			strategies = strings.Split(*flagStrategies, ",")
		}
		if *flagRestartSt != "" {
			restartStrategies = strings.Split(*flagRestartSt, ",")
		}
		return Config{
			Nodes: nodes, PodsPerNode: *flagPods, Strategies: strategies,
			Window: *flagWindow, Repeats: max(1, *flagRepeats), Settle: *flagSettle, Sample: *flagSample,
			ChurnPerNodeMinute: *flagChurn, IncidentPeriod: *flagIncident,
			RestartNodes: *flagRestart, RestartObserve: *flagRestartObs, RestartStrategies: restartStrategies, JSON: *flagJSON, SyncTimeout: *flagSync,
		}, nil
	}
}
