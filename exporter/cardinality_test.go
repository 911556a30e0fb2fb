package exporter

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// podsWithContainers is n copies of the fixture's web pod, each with c
// containers, under new names and uids.
func podsWithContainers(t testing.TB, n, c int) []*corev1.Pod {
	t.Helper()
	var tmpl *corev1.Pod
	for _, p := range loadState(t).Pods() {
		if p.Name == "web-5d8f7c6b9-abcde" {
			tmpl = p
		}
	}
	pods := make([]*corev1.Pod, n)
	for i := range pods {
		p := tmpl.DeepCopy()
		p.Name = fmt.Sprintf("web-5d8f7c6b9-%05d", i)
		p.UID = types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
		p.Spec.Containers = nil
		p.Status.ContainerStatuses = nil
		for j := 0; j < c; j++ {
			name := fmt.Sprintf("c%d", j)
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: name, Image: "nginx:1.29"})
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: name, Ready: true, ContainerID: fmt.Sprintf("containerd://%060d%04d", i, j),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
		}
		pods[i] = p
	}
	return pods
}

// TestNothingLostAt250Pods: at 250 pods of 10 containers, every pod and
// container series arrives and none folds into otel.metric.overflow with the
// default limit; with the SDK's own default (2,000) they would.
func TestNothingLostAt250Pods(t *testing.T) {
	const nPods, nContainers = 250, 10
	pods := podsWithContainers(t, nPods, nContainers)
	st := fakestate.New(pods, nil)
	k, err := fakekubelet.StartForPods("../collector/testdata/summary.json", "", podValues(pods))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	for _, tc := range []struct {
		limit    int
		overflow bool
	}{{0, false}, {2000, true}} {
		t.Run(fmt.Sprintf("limit=%d", tc.limit), func(t *testing.T) {
			recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
			t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "600000") // headroom for -race on a busy machine
			prov, err := New(context.Background(), Config{Protocol: ProtocolGRPC, NodeName: "node-1", Interval: time.Hour,
				EntityKeys: collector.IsResourceAttribute, CardinalityLimit: tc.limit,
				Timeout: 10 * time.Minute}) // headroom for -race on a busy machine
			if err != nil {
				t.Fatal(err)
			}
			defer prov.Shutdown(context.Background())
			cs, err := collector.Default(collector.Config{Kubelet: collector.KubeletConfig{Endpoint: k.URL(), MinInterval: -1}}, st)
			if err != nil {
				t.Fatal(err)
			}
			runner, err := collector.NewRunner(prov.Meter("c"), cs)
			if err != nil {
				t.Fatal(err)
			}
			defer runner.Shutdown(context.Background())
			if err := prov.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Over 3 MiB, the gRPC request goes out in parts (each under a
			// gRPC server's default 4 MiB).
			var pts []otlpreceiver.Point
			exports := recv.Exports()
			for _, ex := range exports {
				pts = append(pts, ex.Points...)
			}
			if tc.limit == 0 && len(exports) < 2 {
				t.Errorf("%d requests: expected the export to need parts under 4 MiB", len(exports))
			}
			overflowed := 0
			for _, p := range pts {
				if p.Get("otel.metric.overflow") == "true" {
					overflowed++
				}
			}
			if tc.overflow {
				if overflowed == 0 {
					t.Errorf("limit %d: no overflow series; the test no longer shows what the default protects against", tc.limit)
				}
				return
			}
			if overflowed != 0 {
				t.Errorf("%d overflow series at %d pods", overflowed, nPods)
			}
			for metric, want := range map[string]int{
				"k8s.pod.status.phase":         nPods * 5,
				"k8s.container.ready":          nPods * nContainers,
				"k8s.container.status.state":   nPods * nContainers * 3,
				"container.cpu.time":           nPods * nContainers,
				"container.memory.working_set": nPods * nContainers,
				"k8s.pod.cpu.usage":            nPods,
			} {
				if got := len(otlpreceiver.Find(pts, metric, nil)); got != want {
					t.Errorf("%s: %d series, want %d", metric, got, want)
				}
			}
		})
	}
}
