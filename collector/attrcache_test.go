package collector

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
	testingclock "k8s.io/utils/clock/testing"
)

// TestKubeletAttributeSetsFollowPodChanges: the kubelet collector keeps its
// series' attribute sets across collections, and a pod whose object the
// informers replace (a label changed, a container restarted with a new id)
// is reported with its new attributes at the next collection, its old ones
// gone; the sets of a pod that left the summary are dropped.
func TestKubeletAttributeSetsFollowPodChanges(t *testing.T) {
	const podName = "web-5d8f7c6b9-abcde"
	state := loadState(t)
	orig, kub := serveMutableSummary(t)
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	kc, _ := newTestKubeletCollector(t, KubeletConfig{Endpoint: kub.URL(), Clock: clk}, state)
	p := newPipeline(t, []Collector{kc})
	next := func() string {
		t.Helper()
		clk.SetTime(clk.Now().Add(DefaultKubeletMinInterval))
		return render(p.collect(t))
	}

	out := render(p.collect(t))
	if !strings.Contains(out, `k8s.pod.label.app="web"`) {
		t.Fatalf("web pod's label not reported:\n%s", grep(out, podName))
	}
	var oldID string
	state.UpdatePod(podName, func(pod *corev1.Pod) {
		pod.Labels["app"] = "web-v2"
		st := &pod.Status.ContainerStatuses[0]
		oldID = strings.TrimPrefix(st.ContainerID, "containerd://")
		st.ContainerID = "containerd://restarted0000"
	})
	if oldID == "" {
		t.Fatal("fixture: the web pod's first container has no id")
	}
	out = next()
	if strings.Contains(out, `k8s.pod.label.app="web"`) || !strings.Contains(out, `k8s.pod.label.app="web-v2"`) {
		t.Errorf("after the label change, want app=web-v2 only:\n%s", grep(out, podName))
	}
	if strings.Contains(out, oldID) || !strings.Contains(out, `container.id="restarted0000"`) {
		t.Errorf("after the restart, want the new container.id only:\n%s", grep(out, podName))
	}

	state.DeletePod(podName)
	kub.SetBody([]byte(strings.Replace(string(orig), `"name": "`+podName+`"`, `"name": "web-5d8f7c6b9-zzzzz"`, 1)))
	_ = next()
	_ = next() // the known pod object is forgotten once the summary lacks its name
	c := kc.(*kubeletCollector)
	c.sets.mu.Lock()
	defer c.sets.mu.Unlock()
	for k := range c.sets.m {
		if k.name == podName {
			t.Errorf("sets of the deleted pod %s still cached: %+v", podName, k)
		}
	}
	if len(c.sets.m) == 0 {
		t.Error("no sets cached for the remaining pods")
	}
}

// TestContentSetsKeyIsUnambiguous: attribute lists that differ only in how
// their bytes split into keys and values, or in a value's type, get sets of
// their own; an unused set is dropped at the end of the next collection.
func TestContentSetsKeyIsUnambiguous(t *testing.T) {
	var c contentSets
	lists := [][]attribute.KeyValue{
		{attribute.String("a", "b:c")},
		{attribute.String("a:b", "c")},
		{attribute.String("a", "b"), attribute.String("c", "")},
		{attribute.String("a", "1")},
		{attribute.Int64("a", 1)},
		{attribute.Bool("a", true)},
		{attribute.String("a", "true")},
		{attribute.Float64("a", 1)},
	}
	seen := map[attribute.Distinct]int{}
	for i, l := range lists {
		s := c.get(l)
		if want := attribute.NewSet(l...); !s.Equals(&want) {
			t.Errorf("list %d: set %v, want %v", i, s.Encoded(attribute.DefaultEncoder()), want.Encoded(attribute.DefaultEncoder()))
		}
		if j, ok := seen[s.Equivalent()]; ok {
			t.Errorf("lists %d and %d share a set", j, i)
		}
		seen[s.Equivalent()] = i
	}
	if len(c.m) != len(lists) {
		t.Errorf("%d cached sets, want %d", len(c.m), len(lists))
	}
	c.sweep()
	c.get(lists[0])
	c.sweep()
	if len(c.m) != 1 {
		t.Errorf("%d cached sets after a collection that used one, want 1", len(c.m))
	}
}

// TestPodSeriesReuseTheirSets: from the second collection on, every series
// of an unchanged pod reuses its attribute set. It did not: the workload
// attributes came in a map's order, and building a set sorted the caller's
// attribute slice in place, reordering it under the container's next
// series; either changed the series' keys from one collection to the next.
// The pod collector now keeps its series' sets itself, by pod object, as the
// kubelet collector does, and builds no attribute slice for a cached set.
func TestPodSeriesReuseTheirSets(t *testing.T) {
	pc := NewPodCollector(loadState(t), testConfig).(*podCollector)
	p := newPipeline(t, []Collector{pc})
	p.collect(t)
	first := pc.sets.built
	if first == 0 {
		t.Fatal("the first collection built no set")
	}
	for i := 0; i < 5; i++ {
		p.collect(t)
	}
	if again := pc.sets.built - first; again != 0 {
		t.Errorf("%d sets built again in 5 collections of unchanged pods (%d in the first)", again, first)
	}
	if n := p.runner.sets.built; n != 0 {
		t.Errorf("%d sets built from attribute slices; the pod collector's series all have their own", n)
	}
}
