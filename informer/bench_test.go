package informer

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/controlplane"
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
	for _, tc := range []struct {
		mode Mode
		user string
	}{{ModeListWatch, agentBenchLW}, {ModeWatchList, agentBenchWL}} {
		b.Run(string(tc.mode), func(b *testing.B) {
			ctx := context.Background()
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			nodes := sim.NodeNames()
			before, err := cp.Metrics(ctx)
			if err != nil {
				b.Fatal(err)
			}
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
				sctx, cancel := context.WithTimeout(ctx, time.Minute)
				err = inf.Shutdown(sctx)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after, err := cp.Metrics(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n := float64(starts)
			delta := func(name string, match map[string]string) float64 {
				return (controlplane.Sum(after, name, match) - controlplane.Sum(before, name, match)) / n
			}
			pods := map[string]string{"resource": "pods"}
			b.ReportMetric(delta("apiserver_init_events_total", pods), "init-events/start")
			b.ReportMetric(delta("apiserver_storage_list_fetched_objects_total", pods), "fetched-objects/start")
			b.ReportMetric(delta("etcd_requests_total", pods)+delta("etcd_requests_total", map[string]string{"resource": "nodes"}), "etcd-requests/start")
			b.ReportMetric(1000*delta("process_cpu_seconds_total", nil), "apiserver-cpu-ms/start")
			b.ReportMetric(delta("apiserver_request_total", pods), "pod-requests/start")
		})
	}
}
