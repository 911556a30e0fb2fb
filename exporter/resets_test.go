package exporter

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestFailedScrapeUnderBothTemporalities: a kubelet scrape fails for one
// interval between two good ones in which the web pod used 60 s of CPU.
// Under delta temporality the export after the failure carries 60, never
// the pod's lifetime total; under cumulative the total never decreases and
// keeps its start time. (Before the fix the series vanished for the failed
// interval and the SDK reported its whole lifetime as the next delta.)
func TestFailedScrapeUnderBothTemporalities(t *testing.T) {
	for _, temporality := range []string{"delta", "cumulative"} {
		t.Run(temporality, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", temporality)
			e := setup(t, ProtocolGRPC, Config{})
			ctx := context.Background()
			web := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde"}
			flush := func() []otlpreceiver.Point {
				t.Helper()
				if err := e.prov.ForceFlush(ctx); err != nil {
					t.Fatal(err)
				}
				return e.recv.Last()
			}
			first := one(t, flush(), "k8s.pod.cpu.time", web)

			e.kubelet.SetStatus(http.StatusInternalServerError)
			failed := otlpreceiver.Find(flush(), "k8s.pod.cpu.time", web)

			sum, err := e.kubelet.Summary()
			if err != nil {
				t.Fatal(err)
			}
			for i := range sum.Pods {
				if sum.Pods[i].PodRef.Name == web["k8s.pod.name"] {
					v := *sum.Pods[i].CPU.UsageCoreNanoSeconds + 60e9
					sum.Pods[i].CPU.UsageCoreNanoSeconds = &v
				}
			}
			b, err := json.Marshal(sum)
			if err != nil {
				t.Fatal(err)
			}
			e.kubelet.SetBody(b)
			e.kubelet.SetStatus(http.StatusOK)
			after := one(t, flush(), "k8s.pod.cpu.time", web)

			if temporality == "delta" {
				if first.Cumulative || after.Cumulative {
					t.Fatalf("not delta: %+v", after)
				}
				for _, p := range failed {
					if p.Value != 0 {
						t.Errorf("delta during the failed scrape = %v, want 0 or no point", p.Value)
					}
				}
				if after.Value < 59.999 || after.Value > 60.001 {
					t.Errorf("delta after a failed scrape = %v, want 60 (the lifetime total was %v)", after.Value, first.Value)
				}
				return
			}
			for _, p := range failed {
				if p.Value < first.Value || p.StartTime != first.StartTime {
					t.Errorf("cumulative during the failed scrape = %+v after %+v", p, first)
				}
			}
			if after.Value-first.Value < 59.999 || after.Value-first.Value > 60.001 || after.StartTime != first.StartTime {
				t.Errorf("cumulative %v (start %d) after %v (start %d), want +60 on the same start time", after.Value, after.StartTime, first.Value, first.StartTime)
			}
		})
	}
}

// TestContainerRestartIsANewSeries: a restarted container (new container id
// in the pod status, CPU time starting again from a few seconds) is a new
// series under both temporalities; the old container's series ends, and no
// series' cumulative total decreases.
func TestContainerRestartIsANewSeries(t *testing.T) {
	for _, temporality := range []string{"delta", "cumulative"} {
		t.Run(temporality, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", temporality)
			e := setup(t, ProtocolGRPC, Config{})
			ctx := context.Background()
			nginx := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "nginx"}
			flush := func() []otlpreceiver.Point {
				t.Helper()
				if err := e.prov.ForceFlush(ctx); err != nil {
					t.Fatal(err)
				}
				return e.recv.Last()
			}
			before := one(t, flush(), "container.cpu.time", nginx)
			oldID := before.Resource["container.id"]
			if oldID == "" {
				t.Fatalf("container series without container.id: %v", before.Resource)
			}

			const newID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			e.state.UpdatePod("web-5d8f7c6b9-abcde", func(p *corev1.Pod) {
				for i := range p.Status.ContainerStatuses {
					if p.Status.ContainerStatuses[i].Name == "nginx" {
						p.Status.ContainerStatuses[i].ContainerID = "containerd://" + newID
						p.Status.ContainerStatuses[i].RestartCount++
					}
				}
			})
			sum, err := e.kubelet.Summary()
			if err != nil {
				t.Fatal(err)
			}
			for i := range sum.Pods {
				for j := range sum.Pods[i].Containers {
					c := &sum.Pods[i].Containers[j]
					if sum.Pods[i].PodRef.Name == nginx["k8s.pod.name"] && c.Name == "nginx" {
						v := uint64(5e9) // 5 s since the restart
						c.CPU.UsageCoreNanoSeconds = &v
					}
				}
			}
			b, err := json.Marshal(sum)
			if err != nil {
				t.Fatal(err)
			}
			e.kubelet.SetBody(b)
			pts := flush()

			if old := otlpreceiver.Find(pts, "container.cpu.time", map[string]string{"container.id": oldID}); len(old) != 0 {
				t.Errorf("the old container's series goes on after the restart: %+v", old)
			}
			after := one(t, pts, "container.cpu.time", map[string]string{"container.id": newID})
			if after.Value != 5 {
				t.Errorf("restarted container's CPU time = %v, want 5 (its own total as the first point of a new series)", after.Value)
			}
			if temporality == "cumulative" && after.Resource["k8s.container.name"] != "nginx" {
				t.Errorf("new series lost its container: %v", after.Resource)
			}
		})
	}
}
