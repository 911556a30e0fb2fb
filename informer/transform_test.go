package informer

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/fleetagent/fleetagent/collector"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func loadJSON[T any](t testing.TB, name string) *T {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	v := new(T)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return v
}

// TestTransformGolden keeps the whole stripped object under test: a change
// to what the cache holds shows up as a diff of the golden file. Run with
// -update to rewrite it after an intended change.
func TestTransformGolden(t *testing.T) {
	for _, tc := range []struct {
		in, golden string
		transform  cache.TransformFunc
		fresh      func(t *testing.T) any
	}{
		{"pod.json", "pod.transformed.json", TransformPod, func(t *testing.T) any { return loadJSON[corev1.Pod](t, "pod.json") }},
		{"node.json", "node.transformed.json", TransformNode, func(t *testing.T) any { return loadJSON[corev1.Node](t, "node.json") }},
	} {
		t.Run(tc.in, func(t *testing.T) {
			out, err := tc.transform(tc.fresh(t))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(out, "", " ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestTransformGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s transformed differs from %s (rerun with -update if intended):\n%s", tc.in, path, got)
			}
		})
	}
}

func TestTransformKeepsWhatCollectorsRead(t *testing.T) {
	pod := loadJSON[corev1.Pod](t, "pod.json")
	before := collector.WorkloadOf(pod)
	out, err := TransformPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	if p.ManagedFields != nil {
		t.Error("managedFields kept")
	}
	if _, ok := p.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		t.Error("last-applied annotation kept")
	}
	if p.Annotations["prometheus.io/scrape"] != "true" {
		t.Errorf("other annotations dropped: %v", p.Annotations)
	}
	if got := collector.WorkloadOf(p); got != before || got.Deployment != "web" {
		t.Errorf("WorkloadOf after transform = %+v, before %+v", got, before)
	}
	if p.Spec.NodeName != "node-042" || len(p.Spec.Containers) != 2 || p.Spec.Containers[0].Resources.Requests.Cpu().MilliValue() != 100 {
		t.Errorf("spec lost what collectors read: %+v", p.Spec)
	}
	if len(p.Spec.Containers[0].Env) != 0 || p.Spec.Containers[0].LivenessProbe != nil {
		t.Errorf("spec kept what collectors never read: %+v", p.Spec)
	}
	// Volumes: names and source kinds (k8s.volume.type), no contents.
	if orig := loadJSON[corev1.Pod](t, "pod.json"); len(p.Spec.Volumes) != len(orig.Spec.Volumes) || len(orig.Spec.Volumes) == 0 {
		t.Fatalf("%d volumes kept of %d", len(p.Spec.Volumes), len(orig.Spec.Volumes))
	}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.Projected != nil && len(v.Projected.Sources) != 0, v.ConfigMap != nil && (v.ConfigMap.Name != "" || len(v.ConfigMap.Items) != 0):
			t.Errorf("volume %s kept its source's contents: %+v", v.Name, v.VolumeSource)
		case v.Projected == nil && v.ConfigMap == nil && v.EmptyDir == nil && v.PersistentVolumeClaim == nil && v.Secret == nil:
			t.Errorf("volume %s lost the kind of its source: %+v", v.Name, v.VolumeSource)
		}
	}
	if len(p.Status.ContainerStatuses) != 2 || p.Status.ContainerStatuses[0].RestartCount != 2 || p.Status.Phase != corev1.PodRunning {
		t.Errorf("status lost: %+v", p.Status)
	}
	// Not a pod (a tombstone): passed through untouched.
	tomb := cache.DeletedFinalStateUnknown{Key: "a/b"}
	if got, err := TransformPod(tomb); err != nil || got != any(tomb) {
		t.Errorf("TransformPod(tombstone) = %v, %v", got, err)
	}
	if got, err := TransformNode(tomb); err != nil || got != any(tomb) {
		t.Errorf("TransformNode(tombstone) = %v, %v", got, err)
	}
}

// BenchmarkCacheBytesPerPod measures what one cached pod costs the agent's
// heap, as decoded from the wire and after TransformPod, and its protobuf
// size (the wire and etcd size) before and after.
func BenchmarkCacheBytesPerPod(b *testing.B) {
	const n = 2000
	orig := loadJSON[corev1.Pod](b, "pod.json")
	for _, tc := range []struct {
		name      string
		transform bool
	}{{"raw", false}, {"transformed", true}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var perPod, protoBytes float64
			for b.Loop() {
				store := cache.NewStore(cache.MetaNamespaceKeyFunc)
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				for k := range n {
					p := orig.DeepCopy()
					p.Name = fmt.Sprintf("web-%d", k)
					var obj any = p
					if tc.transform {
						obj, _ = TransformPod(p)
					}
					if err := store.Add(obj); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				perPod = float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / n
				one, _, _ := store.GetByKey("shop/web-0")
				pb, err := one.(*corev1.Pod).Marshal()
				if err != nil {
					b.Fatal(err)
				}
				protoBytes = float64(len(pb))
				runtime.KeepAlive(store)
			}
			b.ReportMetric(perPod, "heap-bytes/pod")
			b.ReportMetric(protoBytes, "proto-bytes/pod")
		})
	}
}
