package informer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// BenchmarkNodeStartCost measures what one agent's informer start (first
// list of its pods and Node, open watches, synced cache) costs the real
// kube-apiserver holding simNodes x simPodsPerNode pods, in each Mode. It
// reports, per start, deltas of the apiserver's own metrics:
//
//   - init-events: apiserver_init_events_total{resource=pods}, the events
//     the watch cache walked to build watchers' initial state;
//   - fetched-objects: apiserver_storage_list_fetched_objects_total{resource=pods},
//     the objects a LIST walked;
//   - etcd-requests: etcd_requests_total{resource=pods} plus {resource=nodes};
//   - apiserver-cpu-ms: process_cpu_seconds_total of the apiserver (noisy:
//     it includes the apiserver's background work during the run).
//
// Run: FLEETAGENT_BIN_DIR=$PWD/bin go test -run XXX -bench NodeStartCost -benchtime 30x ./informer/
func BenchmarkNodeStartCost(b *testing.B) {
	for _, tc := range benchModes {
		b.Run(string(tc.mode), func(b *testing.B) {
			ctx := context.Background()
			logger, nodes, before := costBaseline(ctx, b)
			var starts int
			for b.Loop() {
				node := nodes[starts%len(nodes)]
				starts++
				inf, err := New(cp.UserConfig(tc.user), Options{NodeName: node, Mode: tc.mode, Logger: logger})
				if err != nil {
					b.Fatal(err)
				}
				if err := inf.Start(ctx); err != nil {
					b.Fatal(err)
				}
				if err := inf.WaitForSync(ctx); err != nil {
					b.Fatal(err)
				}
				if n := len(inf.Pods()); n != simPodsPerNode {
					b.Fatalf("node %s: %d pods cached, want %d", node, n, simPodsPerNode)
				}
				shutdownWithin(ctx, b, inf)
			}
			b.StopTimer()
			reportApiserverCost(ctx, b, before, float64(starts), "start")
		})
	}
}

// BenchmarkFleetStartCost starts the informers of all simNodes nodes at
// once, as a DaemonSet rollout or an apiserver restart does, and reports
// the apiserver's cost per fleet start (see BenchmarkNodeStartCost for the
// metrics). ns/op is the time until every node's cache has synced. It runs
// on the simulated cluster, then again after adding extraPods pods on
// other nodes, to show which costs grow with the cluster rather than with
// the node.
//
// Run: FLEETAGENT_BIN_DIR=$PWD/bin go test -run XXX -bench FleetStartCost -benchtime 5x ./informer/
func BenchmarkFleetStartCost(b *testing.B) {
	const extraPods = 6000
	ctx := context.Background()
	for _, extra := range []int{0, extraPods} {
		if extra > 0 {
			if err := addPodsElsewhere(ctx, extra); err != nil {
				b.Fatal(err)
			}
		}
		for _, tc := range benchModes {
			b.Run(fmt.Sprintf("pods=%d/%s", simNodes*simPodsPerNode+extra, tc.mode), func(b *testing.B) {
				benchFleetStart(ctx, b, tc.mode, tc.user)
			})
		}
	}
}

func benchFleetStart(ctx context.Context, b *testing.B, mode Mode, user string) {
	logger, nodes, before := costBaseline(ctx, b)
	var err error
	var starts int
	for b.Loop() {
		starts++
		fleet := make([]*Informers, len(nodes))
		for k, node := range nodes {
			if fleet[k], err = New(cp.UserConfig(user), Options{NodeName: node, Mode: mode, Logger: logger}); err != nil {
				b.Fatal(err)
			}
			if err := fleet[k].Start(ctx); err != nil {
				b.Fatal(err)
			}
		}
		for k, inf := range fleet {
			if err := inf.WaitForSync(ctx); err != nil {
				b.Fatal(err)
			}
			if n := len(inf.Pods()); n != simPodsPerNode {
				b.Fatalf("node %s: %d pods cached, want %d", nodes[k], n, simPodsPerNode)
			}
		}
		b.StopTimer()
		for _, inf := range fleet {
			shutdownWithin(ctx, b, inf)
		}
		b.StartTimer()
	}
	b.StopTimer()
	reportApiserverCost(ctx, b, before, float64(starts), "fleet-start")
}

// benchModes are the ways an agent fills its cache that the start-cost
// benchmarks compare, each run as its own user.
var benchModes = []struct {
	mode Mode
	user string
}{{ModeListWatch, agentBenchLW}, {ModeWatchList, agentBenchWL}}

// costBaseline is what a start-cost benchmark starts from: a logger that
// discards, the simulated cluster's nodes, and the apiserver's metrics
// before the first start.
func costBaseline(ctx context.Context, b *testing.B) (*slog.Logger, []string, map[string]*dto.MetricFamily) {
	before, err := cp.Metrics(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil)), sim.NodeNames(), before
}

// shutdownWithin shuts inf down, allowing it a minute.
func shutdownWithin(ctx context.Context, b *testing.B, inf *Informers) {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := inf.Shutdown(sctx); err != nil {
		b.Fatal(err)
	}
}

// addPodsElsewhere creates n pods bound to nodes no agent in the benchmark
// runs on, in a namespace of their own.
func addPodsElsewhere(ctx context.Context, n int) error {
	const ns = "informer-bench-extra"
	cfg := cp.AdminConfig()
	cfg.QPS, cfg.Burst = 5000, 5000
	client := kubernetes.NewForConfigOrDie(cfg)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	const workers = 32
	next := make(chan int)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := range next {
				if errs[w] != nil {
					continue
				}
				p := testPod(fmt.Sprintf("extra-%d", k), fmt.Sprintf("extra-node-%d", k/simPodsPerNode), map[string]string{"app": "extra"})
				p.Namespace = ns
				_, errs[w] = client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			}
		})
	}
	for k := range n {
		next <- k
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// reportApiserverCost reports the apiserver metric deltas since before,
// divided by n.
func reportApiserverCost(ctx context.Context, b *testing.B, before map[string]*dto.MetricFamily, n float64, per string) {
	after, err := cp.Metrics(ctx)
	if err != nil {
		b.Fatal(err)
	}
	delta := func(name string, match map[string]string) float64 {
		return (controlplane.Sum(after, name, match) - controlplane.Sum(before, name, match)) / n
	}
	pods := map[string]string{"resource": "pods"}
	b.ReportMetric(delta("apiserver_init_events_total", pods), "init-events/"+per)
	b.ReportMetric(delta("apiserver_storage_list_fetched_objects_total", pods), "fetched-objects/"+per)
	b.ReportMetric(delta("etcd_requests_total", pods)+delta("etcd_requests_total", map[string]string{"resource": "nodes"}), "etcd-requests/"+per)
	b.ReportMetric(1000*delta("process_cpu_seconds_total", nil), "apiserver-cpu-ms/"+per)
	b.ReportMetric(delta("apiserver_request_total", pods), "pod-requests/"+per)
}

// BenchmarkSteadyStateWrite runs every simulated node's agent and measures
// what one pod write costs in watch traffic: a write to a pod on a node
// without an agent must reach no agent (the watch cache dispatches pod
// events by spec.nodeName), a write to a pod on an agent's node exactly
// one. It reports, per write: agent-events (events the fleet's informers
// received), agent-bookmarks (bookmarks they received meanwhile, about one
// a minute per watch), watch-events (apiserver_watch_events_total{resource=pods}:
// everything the apiserver sent to pod watchers, bookmarks included) and
// apiserver CPU.
//
// Run: FLEETAGENT_BIN_DIR=$PWD/bin go test -run XXX -bench SteadyStateWrite -benchtime 200x ./informer/
func BenchmarkSteadyStateWrite(b *testing.B) {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes := sim.NodeNames()
	fleet := make([]*Informers, len(nodes))
	for k, node := range nodes {
		inf, err := New(cp.UserConfig(agentBenchLW), Options{NodeName: node, Logger: logger})
		if err != nil {
			b.Fatal(err)
		}
		if err := inf.Start(ctx); err != nil {
			b.Fatal(err)
		}
		fleet[k] = inf
	}
	defer func() {
		for _, inf := range fleet {
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := inf.Shutdown(sctx); err != nil {
				b.Error(err)
			}
			cancel()
		}
	}()
	for _, inf := range fleet {
		if err := inf.WaitForSync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	fleetEvents := func() int64 {
		var n int64
		for _, inf := range fleet {
			n += inf.Stats().Pods.Events
		}
		return n
	}
	fleetBookmarks := func() int64 {
		var n int64
		for _, inf := range fleet {
			n += inf.Stats().Pods.Bookmarks
		}
		return n
	}
	cfg := cp.AdminConfig()
	cfg.QPS, cfg.Burst = 5000, 5000 // the writer must not be what is measured
	writer := kubernetes.NewForConfigOrDie(cfg).CoreV1().Pods(testNamespace)
	for _, tc := range []struct{ name, node string }{
		{"elsewhere", "node-without-agent"},
		{"own-node", nodes[len(nodes)-1]},
	} {
		b.Run(tc.name, func(b *testing.B) {
			name := "steady-" + tc.name
			created, err := writer.Create(ctx, testPod(name, tc.node, map[string]string{"i": "0"}), metav1.CreateOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				_ = writer.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			}()
			// Let the create's event settle before counting.
			settle(ctx, b, fleetEvents)
			before, err := cp.Metrics(ctx)
			if err != nil {
				b.Fatal(err)
			}
			events0, bookmarks0 := fleetEvents(), fleetBookmarks()
			p := created
			writes := 0
			for b.Loop() {
				writes++
				p.Labels["i"] = fmt.Sprint(writes)
				if p, err = writer.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			settle(ctx, b, fleetEvents)
			after, err := cp.Metrics(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n := float64(writes)
			pods := map[string]string{"resource": "pods"}
			b.ReportMetric(float64(fleetEvents()-events0)/n, "agent-events/write")
			b.ReportMetric(float64(fleetBookmarks()-bookmarks0)/n, "agent-bookmarks/write")
			b.ReportMetric((controlplane.Sum(after, "apiserver_watch_events_total", pods)-controlplane.Sum(before, "apiserver_watch_events_total", pods))/n, "watch-events/write")
			b.ReportMetric(1000*(controlplane.Sum(after, "process_cpu_seconds_total", nil)-controlplane.Sum(before, "process_cpu_seconds_total", nil))/n, "apiserver-cpu-ms/write")
		})
	}
}

// settle waits until count stops moving for half a second, so events in
// flight are attributed to the phase that caused them.
func settle(ctx context.Context, b *testing.B, count func() int64) {
	b.Helper()
	last := count()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for range 20 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c := count(); c == last {
			return
		} else {
			last = c
		}
	}
}
