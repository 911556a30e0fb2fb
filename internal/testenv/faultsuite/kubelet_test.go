package faultsuite

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestKubeletFaults makes the kubelet unreachable, slower than its
// timeout, answer 500, and
// send malformed, truncated and oversized bodies, each long enough for the
// last good summary to expire. Each failed scrape is counted on /metrics,
// the pod and node state collectors go on exporting meanwhile, the kubelet
// series stop (rather than being served stale), and they resume once the
// kubelet is well again.
func TestKubeletFaults(t *testing.T) {
	checkLeaksAtEnd(t)
	nodes := cluster.NodeNames()
	// The export deadline must leave room for the kubelet client's own
	// 10 s timeout: a collection is bounded by the export deadline, so a
	// kubelet slower than that deadline would fail the whole export (pod
	// state included), not just the kubelet scrape.
	r := newRig(t, kubeletUser, nodes[5], rigOptions{exportTimeout: 15 * time.Second})
	r.start(t)
	r.WaitExport(t, 30*time.Second, "first export with kubelet and pod metrics", func(pts []otlpreceiver.Point) bool {
		return hasMetric("k8s.pod.memory.working_set")(pts) && hasMetric("k8s.pod.status.phase")(pts)
	})
	served, err := r.Kubelet.Summary()
	if err != nil {
		t.Fatal(err)
	}
	good, err := json.Marshal(served)
	if err != nil {
		t.Fatal(err)
	}
	r.Recv.Reset()
	base := liveHeap()

	failures := func() float64 {
		return adminMetric(t, r.Agent, "fleetagent_collector_kubelet_scrapes", `result="failure"`)
	}
	resumed := func(what string) {
		t.Helper()
		r.Recv.Reset()
		r.WaitExport(t, 30*time.Second, what+": kubelet series resume", func(pts []otlpreceiver.Point) bool {
			return hasMetric("k8s.pod.memory.working_set")(pts) && hasMetric("k8s.pod.status.phase")(pts)
		})
	}
	// The faults follow one another without a good scrape in between (so
	// the last good summary, reused for MinInterval, has expired); the
	// kubelet recovers after the first and after the last.
	// While the kubelet answers an oversized body, the fixture holds it and
	// a scrape in flight holds up to MaxResponseBytes of it (io.ReadAll's
	// buffer, which grows by up to a quarter past what it read): the bound
	// is the client's limit, not the body's size.
	var oversizedHeld float64
	faults := []struct {
		name        string
		break_, fix func()
	}{
		{"down", r.kproxy.Down, func() { r.kproxy.Up(t) }},
		{"slower than the kubelet timeout", func() { r.Kubelet.SetDelay(collector.DefaultKubeletTimeout + 2*time.Second) }, func() { r.Kubelet.SetDelay(0) }},
		{"HTTP 500", func() { r.Kubelet.SetStatus(http.StatusInternalServerError) }, func() { r.Kubelet.SetStatus(http.StatusOK) }},
		{"malformed", func() { r.Kubelet.SetBody([]byte(`{"node": {"nodeName": `)) }, func() { r.Kubelet.SetBody(good) }},
		{"truncated", func() { r.Kubelet.SetBody(good[:len(good)*2/3]) }, func() { r.Kubelet.SetBody(good) }},
		{"not JSON", func() { r.Kubelet.SetBody([]byte("<html>502 Bad Gateway</html>")) }, func() { r.Kubelet.SetBody(good) }},
		{"oversized", func() {
			big := append([]byte(`{"pods":[`), bytes.Repeat([]byte(" "), int(collector.DefaultKubeletMaxResponse)+1)...)
			oversizedHeld = float64(len(big))/(1<<20) + 1.25*float64(collector.DefaultKubeletMaxResponse)/(1<<20)
			r.Kubelet.SetBody(append(big, `]}`...))
		}, func() { r.Kubelet.SetBody(good); oversizedHeld = 0 }},
	}
	for i, fault := range faults {
		if i > 1 {
			faults[i-1].fix()
		}
		before := failures()
		fault.break_()
		waitFor(t, 30*time.Second, fault.name+": the failed scrape is counted", func() bool { return failures() > before })
		r.Recv.Reset()
		r.WaitExport(t, 30*time.Second, fault.name+": pod state goes on without kubelet series", func(pts []otlpreceiver.Point) bool {
			return hasMetric("k8s.pod.status.phase")(pts) && !hasMetric("k8s.pod.memory.working_set")(pts)
		})
		heap := liveHeap()
		t.Logf("kubelet %s: scrape failures %.0f -> %.0f", fault.name, before, failures())
		checkHeap(t, "while the kubelet was "+fault.name, base+oversizedHeld, heap, 16)
		if i == 0 {
			fault.fix()
			resumed(fault.name)
		}
	}
	faults[len(faults)-1].fix()
	resumed(faults[len(faults)-1].name)
	r.Recv.Reset()
	checkHeap(t, "after the kubelet faults", base, liveHeap(), 16)
	r.Stop(t)
}
