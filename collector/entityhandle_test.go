package collector

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// expandHandles replaces each point's entity handle with the entity
// attributes ents gives for it; a handle ents does not know fails the test.
func expandHandles(t *testing.T, ents *Entities, rm *metricdata.ResourceMetrics) {
	t.Helper()
	expand := func(set attribute.Set) attribute.Set {
		id, ok := set.Value(EntityHandleKey)
		if !ok {
			return set
		}
		attrs, ok := ents.Attributes(id.AsString())
		if !ok {
			t.Fatalf("handle %q is not in the registry", id.AsString())
		}
		var kvs []attribute.KeyValue
		for _, kv := range set.ToSlice() {
			if kv.Key != EntityHandleKey {
				kvs = append(kvs, kv)
			}
		}
		return attribute.NewSet(append(kvs, attrs...)...)
	}
	for _, m := range productMetrics(*rm) {
		eachPoint(m, func(set *attribute.Set, _ any) { *set = expand(*set) })
	}
}

// TestEntityHandlesLoseNothing: with entity handles, every series of the
// default collectors carries no entity attribute, only its handle (plus
// its point attributes; node series have neither), and putting the
// registry's attributes back gives exactly the output without handles (the
// goldens), over two collections.
func TestEntityHandlesLoseNothing(t *testing.T) {
	cs, _ := defaultOnFixtures(t)
	ents := NewEntities()
	p := newPipeline(t, cs, WithEntityHandles(ents))
	want := defaultGoldens(t)
	for round := 0; round < 2; round++ {
		rm := p.collect(t)
		handles, points := map[string]bool{}, 0
		for _, m := range productMetrics(rm) {
			points += countPoints(m)
			eachPoint(m, func(set *attribute.Set, _ any) {
				for _, kv := range set.ToSlice() {
					if IsResourceAttribute(string(kv.Key)) {
						t.Fatalf("%s: entity attribute %s on a point with handles on", m.Name, kv.Key)
					}
				}
				// Node series have no entity attribute (the node's are
				// on the provider's resource) and so no handle.
				if id, ok := set.Value(EntityHandleKey); ok {
					handles[id.AsString()] = true
				}
			})
		}
		if points == 0 || len(handles) == 0 {
			t.Fatalf("round %d: %d points, %d handles", round, points, len(handles))
		}
		// One handle per entity: the node, each pod, each container.
		if got := ents.Len(); got != len(handles) {
			t.Errorf("round %d: registry holds %d entities, the points use %d", round, got, len(handles))
		}
		expandHandles(t, ents, &rm)
		if got := render(rm); sortedLines(got) != sortedLines(want) {
			t.Errorf("round %d: output with handles expanded differs from the goldens:\n%s", round, diff(sortedLines(want), sortedLines(got)))
		}
	}
}

func countPoints(m metricdata.Metrics) int {
	n := 0
	eachPoint(m, func(*attribute.Set, any) { n++ })
	return n
}

// recordFunc is a Collector that records what its function says.
type recordFunc struct {
	d *Desc
	f func(r Recorder)
}

func (c recordFunc) Name() string      { return "test" }
func (c recordFunc) Describe() []*Desc { return []*Desc{c.d} }
func (c recordFunc) Collect(_ context.Context, r Recorder) error {
	c.f(r)
	return nil
}

// TestEntityHandleLifetime: an id always stands for the same attributes (a
// pod whose labels change gets a new one, a set recorded again keeps its
// own); an entity's id stays readable for the collection after the last
// that used it (an export still in flight resolves it) and is dropped
// after that; a series without entity attributes gets no handle.
func TestEntityHandleLifetime(t *testing.T) {
	d := &Desc{Source: "test", Name: "test.bytes", Unit: "By", Kind: Gauge}
	pod := func(uid, label string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("k8s.pod.uid", uid), attribute.String("k8s.pod.name", "p-"+uid), attribute.String("k8s.pod.label.app", label)}
	}
	var record []func(Recorder)
	c := recordFunc{d: d, f: func(r Recorder) {
		for _, f := range record {
			f(r)
		}
	}}
	ents := NewEntities()
	p := newPipeline(t, []Collector{c}, WithEntityHandles(ents))
	points := func() map[string]attribute.Set { // by direction
		out := map[string]attribute.Set{}
		rm := p.collect(t)
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name == d.Name {
					eachPoint(m, func(s *attribute.Set, _ any) {
						dir, _ := s.Value("network.io.direction")
						out[dir.AsString()] = *s
					})
				}
			}
		}
		return out
	}
	id := func(s attribute.Set) string {
		v, ok := s.Value(EntityHandleKey)
		if !ok {
			t.Fatalf("no handle on {%s}", attrString(s))
		}
		return v.AsString()
	}

	// Collection 1: pod u1 (two series, one set and one attribute slice),
	// and a series with no entity attribute.
	record = []func(Recorder){
		func(r Recorder) {
			r.Record(d, 1, append(pod("u1", "web"), attribute.String("network.io.direction", "receive"))...)
		},
		func(r Recorder) {
			recordSet(r, d, 2, attribute.NewSet(append(pod("u1", "web"), attribute.String("network.io.direction", "transmit"))...))
		},
		func(r Recorder) { r.Record(d, 3, attribute.String("network.io.direction", "none")) },
	}
	got := points()
	u1 := id(got["receive"])
	if id(got["transmit"]) != u1 {
		t.Errorf("one pod's two series have handles %s and %s", u1, id(got["transmit"]))
	}
	if tr := got["transmit"]; tr.Len() != 2 {
		t.Errorf("point attributes {%s}: want the direction and the handle only", attrString(got["transmit"]))
	}
	if s := got["none"]; s.Len() != 1 || s.HasValue(EntityHandleKey) {
		t.Errorf("a series without entity attributes became {%s}", attrString(s))
	}
	attrs, ok := ents.Attributes(u1)
	want, have := attribute.NewSet(pod("u1", "web")...), attribute.NewSet(attrs...)
	if !ok || !have.Equals(&want) {
		t.Errorf("Attributes(%s) = %v, %v; want the pod's attributes", u1, attrs, ok)
	}

	// Collection 2: u1's label changed: a new id, the old one still readable.
	record = record[:1]
	record[0] = func(r Recorder) {
		r.Record(d, 1, append(pod("u1", "api"), attribute.String("network.io.direction", "receive"))...)
	}
	u1b := id(points()["receive"])
	if u1b == u1 {
		t.Errorf("a pod whose label changed kept handle %s", u1)
	}
	if _, ok := ents.Attributes(u1); !ok {
		t.Errorf("handle %s dropped one collection after its last use; an export in flight may still hold it", u1)
	}
	// Collection 3: u1's old id is gone, the new one stays.
	points()
	if _, ok := ents.Attributes(u1); ok {
		t.Errorf("handle %s still held two collections after its last use", u1)
	}
	a, ok := ents.Attributes(u1b)
	if set := attribute.NewSet(a...); !ok || !set.HasValue("k8s.pod.label.app") {
		t.Errorf("Attributes(%s) = %v, %v", u1b, a, ok)
	}
	if n := ents.Len(); n != 1 {
		t.Errorf("registry holds %d entities after the pod's old attributes went, want 1", n)
	}
}

// countingObserver counts observations and keeps the last options.
type countingObserver struct {
	embedded.Observer
	n    int
	last metric.ObserveConfig
}

func (o *countingObserver) ObserveFloat64(_ metric.Float64Observable, _ float64, opts ...metric.ObserveOption) {
	o.n++
	o.last = metric.NewObserveConfig(opts)
}

func (o *countingObserver) ObserveInt64(_ metric.Int64Observable, _ int64, opts ...metric.ObserveOption) {
	o.n++
	o.last = metric.NewObserveConfig(opts)
}

// TestObservingAKnownSetAllocatesNothing: with entity handles, recording a
// series whose set was seen before allocates nothing in the collector: the
// observe options are kept with the converted set. Before, every data point
// allocated an option and the slice that passed it.
func TestObservingAKnownSetAllocatesNothing(t *testing.T) {
	inst, err := noop.NewMeterProvider().Meter("t").Float64ObservableGauge("g")
	if err != nil {
		t.Fatal(err)
	}
	d := &Desc{Name: "k8s.pod.uptime"}
	obs := &countingObserver{}
	rec := &observerRecorder{o: obs, insts: map[*Desc]metric.Observable{d: inst},
		handles: &handleSets{ents: NewEntities(), isEntity: IsResourceAttribute}}
	set := attribute.NewSet(attribute.String("k8s.pod.uid", "u-1"), attribute.String("k8s.pod.name", "p-1"),
		attribute.String("direction", "receive"))
	rec.RecordSet(d, 1, set)
	got := obs.last.Attributes()
	if _, ok := got.Value(EntityHandleKey); !ok || got.Len() != 2 {
		t.Fatalf("observed with %v; want the handle and direction", got.ToSlice())
	}
	if allocs := testing.AllocsPerRun(100, func() { rec.RecordSet(d, 2, set) }); allocs != 0 {
		t.Errorf("recording a known set allocated %v times per observation; want 0", allocs)
	}
	if last := obs.last.Attributes(); obs.n != 102 || !last.Equals(&got) {
		t.Errorf("%d observations, last with %v; want 102 with %v", obs.n, last.ToSlice(), got.ToSlice())
	}
}
