package faultsuite

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestCollectorDownSlowFailing makes the OTLP collector unreachable, slower
// than the export timeout, and answer UNAVAILABLE and RESOURCE_EXHAUSTED
// (with Retry-After), each for several export intervals. Failed exports are
// counted, nothing accumulates (the live heap stays flat: failed exports
// are dropped, not queued), the apiserver sees no extra request, and
// kubelet and pod metrics arrive again once the collector is back.
func TestCollectorDownSlowFailing(t *testing.T) {
	checkLeaksAtEnd(t)
	nodes := cluster.NodeNames()
	r := newRig(t, otlpUser, nodes[4], rigOptions{})
	r.start(t)
	r.WaitExport(t, 30*time.Second, "first export", hasMetric("k8s.node.cpu.usage"))
	r.Recv.Reset()
	base := liveHeap()
	from := time.Now()

	for _, fault := range []struct {
		name        string
		break_, fix func()
	}{
		{"down", r.Recv.Down, func() {
			if err := r.Recv.Up(); err != nil {
				t.Fatal(err)
			}
		}},
		{"slower than the export timeout", func() { r.Recv.SetDelay(5 * time.Second) }, func() { r.Recv.SetDelay(0) }},
		{"UNAVAILABLE", func() { r.Recv.SetFailure(otlpreceiver.Failure{GRPCCode: codes.Unavailable}) }, func() { r.Recv.SetFailure(otlpreceiver.Failure{}) }},
		{"RESOURCE_EXHAUSTED with Retry-After", func() {
			r.Recv.SetFailure(otlpreceiver.Failure{GRPCCode: codes.ResourceExhausted, RetryAfter: 2 * time.Second})
		}, func() { r.Recv.SetFailure(otlpreceiver.Failure{}) }},
	} {
		failed := r.Agent.ExportStats().Failures
		fault.break_()
		var heaps []float64
		for i := 0; i < 3; i++ {
			time.Sleep(1500 * time.Millisecond)
			heaps = append(heaps, liveHeap())
		}
		waitFor(t, 20*time.Second, fault.name+": failed exports are counted", func() bool { return r.Agent.ExportStats().Failures > failed })
		st := r.Agent.ExportStats()
		fault.fix()
		r.Recv.Reset()
		r.WaitExport(t, 60*time.Second, fault.name+": kubelet metrics resume", hasMetric("k8s.pod.memory.working_set"))
		r.WaitExport(t, 30*time.Second, fault.name+": pod state resumes", hasMetric("k8s.pod.status.phase"))
		t.Logf("collector %s: export failures %d -> %d (last error %q), live heap during the fault %.1f MiB", fault.name, failed, st.Failures, st.LastError, heaps)
		for _, h := range heaps {
			checkHeap(t, "while the collector is "+fault.name, base, h, 16)
		}
		if !r.Agent.Informers().HasSynced() {
			t.Errorf("collector %s: informers lost their sync", fault.name)
		}
	}
	// Export failures must not turn into apiserver traffic.
	rep := auditRate(t, from, time.Now(), func(u string) bool { return u == otlpUser })
	if rep.ByVerb["list"] > 0 || rep.ByVerb["get"] > 0 {
		t.Errorf("the agent listed or got from the apiserver while only the collector failed: %v", rep.ByVerb)
	}
	r.Recv.Reset()
	checkHeap(t, "after the collector faults", base, liveHeap(), 16)
	r.Stop(t)
}
