package faultsuite

import (
	"bytes"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/internal/otlpreceiver"
)

// TestKubeletFaults makes the kubelet unreachable, slow, answer 500, and
// send malformed, truncated and oversized bodies, each long enough for the
// last good summary to expire. Each failed scrape is counted on /metrics,
// the pod and node state collectors go on exporting meanwhile, the kubelet
// series stop (rather than being served stale), and they resume once the
// kubelet is well again.
func TestKubeletFaults(t *testing.T) {
	checkLeaksAtEnd(t)
	nodes := cluster.NodeNames()
	r := newRig(t, kubeletUser, nodes[5], rigOptions{})
	r.start(t)
	defer r.stop(t)
	r.waitExport(t, 30*time.Second, "first export with kubelet and pod metrics", func(pts []otlpreceiver.Point) bool {
		return hasMetric("k8s.pod.memory.working_set")(pts) && hasMetric("k8s.pod.status.phase")(pts)
	})
	good, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	good = bytes.ReplaceAll(good, []byte(`"nodeName": "node-1"`), []byte(`"nodeName": "`+r.node+`"`))
	oversized := append([]byte(`{"pods":[`), bytes.Repeat([]byte(" "), int(collector.DefaultKubeletMaxResponse)+1)...)
	oversized = append(oversized, []byte(`]}`)...)
	r.recv.Reset()
	base := liveHeap()

	for _, fault := range []struct {
		name        string
		break_, fix func()
	}{
		{"down", r.kproxy.Down, func() { r.kproxy.Up(t) }},
		{"slow", func() { r.kubelet.SetDelay(5 * time.Second) }, func() { r.kubelet.SetDelay(0) }},
		{"HTTP 500", func() { r.kubelet.SetStatus(http.StatusInternalServerError) }, func() { r.kubelet.SetStatus(http.StatusOK) }},
		{"malformed", func() { r.kubelet.SetBody([]byte(`{"node": {"nodeName": `)) }, func() { r.kubelet.SetBody(good) }},
		{"truncated", func() { r.kubelet.SetBody(good[:len(good)*2/3]) }, func() { r.kubelet.SetBody(good) }},
		{"not JSON", func() { r.kubelet.SetBody([]byte("<html>502 Bad Gateway</html>")) }, func() { r.kubelet.SetBody(good) }},
		{"oversized", func() { r.kubelet.SetBody(oversized) }, func() { r.kubelet.SetBody(good) }},
	} {
		failures := adminMetric(t, r.agent, "fleetagent_collector_kubelet_scrapes", `result="failure"`)
		fault.break_()
		waitFor(t, 30*time.Second, fault.name+": the failed scrape is counted", func() bool {
			return adminMetric(t, r.agent, "fleetagent_collector_kubelet_scrapes", `result="failure"`) > failures
		})
		r.recv.Reset()
		r.waitExport(t, 30*time.Second, fault.name+": pod state goes on without kubelet series", func(pts []otlpreceiver.Point) bool {
			return hasMetric("k8s.pod.status.phase")(pts) && !hasMetric("k8s.pod.memory.working_set")(pts)
		})
		heap := liveHeap()
		fault.fix()
		r.recv.Reset()
		r.waitExport(t, 30*time.Second, fault.name+": kubelet series resume", func(pts []otlpreceiver.Point) bool {
			return hasMetric("k8s.pod.memory.working_set")(pts) && hasMetric("k8s.pod.status.phase")(pts)
		})
		now := adminMetric(t, r.agent, "fleetagent_collector_kubelet_scrapes", `result="failure"`)
		t.Logf("kubelet %s: scrape failures %.0f -> %.0f", fault.name, failures, now)
		checkHeap(t, "while the kubelet was "+fault.name, base, heap, 16)
	}
	oversized = nil
	r.recv.Reset()
	checkHeap(t, "after the kubelet faults", base, liveHeap(), 16)
	r.stop(t)
}
