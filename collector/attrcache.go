package collector

import (
	"math"
	"slices"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
)

// SetRecorder is a Recorder that also takes a ready attribute set. The
// Runner's recorder is one: collectors that keep their series' sets across
// collections (setCache) then neither sort nor hash attributes per point.
// recordSet falls back to Record for other recorders.
type SetRecorder interface {
	Recorder
	RecordSet(d *Desc, v float64, set attribute.Set)
}

func recordSet(r Recorder, d *Desc, v float64, set attribute.Set) {
	if sr, ok := r.(SetRecorder); ok {
		sr.RecordSet(d, v, set)
		return
	}
	r.Record(d, v, set.ToSlice()...)
}

// setKey names one series' attribute set: the pod's namespace, name and
// uid, the container name ("" for pod-level series) and up to two point
// attributes.
type setKey struct {
	namespace, name, uid, container string
	k1, v1, k2, v2                  string
}

type setEntry struct {
	set attribute.Set
	// pod is the object the set was built from: the informers replace
	// a pod's object when it changes, and a different one (or nil where
	// there was one) rebuilds the set.
	pod *corev1.Pod
	gen uint64
}

// setCache keeps the attribute sets of a collector's series from one
// collection to the next. Building an attribute.Set sorts, deduplicates and
// hashes its attributes (and above 10 of them, as a pod's or container's
// entity attributes are, goes through reflection), which was a third of
// what one collection allocated (BenchmarkIntervalAllocs). A set not used
// in a collection is dropped at its end (sweep), so deleted pods do not
// accumulate.
type setCache struct {
	mu  sync.Mutex // held by the collector for a whole collection
	gen uint64
	m   map[setKey]*setEntry
	// built counts the sets built (misses), for tests.
	built int
}

// get returns the cached set of k built from pod, or nil.
func (c *setCache) get(k setKey, pod *corev1.Pod) *attribute.Set {
	e, ok := c.m[k]
	if !ok || e.pod != pod {
		return nil
	}
	e.gen = c.gen
	return &e.set
}

// put builds and caches the set of k from kvs.
func (c *setCache) put(k setKey, pod *corev1.Pod, kvs []attribute.KeyValue) *attribute.Set {
	if c.m == nil {
		c.m = map[setKey]*setEntry{}
	}
	e := c.m[k]
	if e == nil {
		e = &setEntry{}
		c.m[k] = e
	}
	c.built++
	e.set, e.pod, e.gen = attribute.NewSet(kvs...), pod, c.gen
	return &e.set
}

// sweep drops the sets not used since the last sweep.
func (c *setCache) sweep() {
	for k, e := range c.m {
		if e.gen != c.gen {
			delete(c.m, k)
		}
	}
	c.gen++
}

// entity is one pod's or container's series within a collection: its
// cache key and how to build its attributes when the cache has no set.
type entity struct {
	c     *setCache
	key   setKey
	pod   *corev1.Pod
	attrs func() []attribute.KeyValue
	base  []attribute.KeyValue // attrs(), once asked for
	built bool
}

// kvs returns the entity's attributes, built once per collection and only
// when asked for (for a set not cached yet, or a caller that records with
// attribute slices). They must not be modified.
func (e *entity) kvs() []attribute.KeyValue {
	if !e.built {
		b := e.attrs()
		e.base, e.built = b[:len(b):len(b)], true // an append by a caller copies
	}
	return e.base
}

// set returns the entity's attribute set plus the point attributes extra:
// at most two, string-valued (they are part of the cache key).
func (e *entity) set(extra ...attribute.KeyValue) attribute.Set {
	return e.setKeyed(len(extra), extra...)
}

// setKeyed is set where only the first keyed (at most two, string-valued)
// of extra are the cache key: the others must follow from those and the
// pod object (a volume's type and claim from its name and the pod's spec).
func (e *entity) setKeyed(keyed int, extra ...attribute.KeyValue) attribute.Set {
	if keyed > 2 || keyed > len(extra) {
		panic("collector: entity.set keys on at most two of its point attributes")
	}
	k := e.key
	if keyed > 0 {
		k.k1, k.v1 = string(extra[0].Key), extra[0].Value.AsString()
	}
	if keyed > 1 {
		k.k2, k.v2 = string(extra[1].Key), extra[1].Value.AsString()
	}
	if s := e.c.get(k, e.pod); s != nil {
		return *s
	}
	base := e.kvs()
	kvs := make([]attribute.KeyValue, 0, len(base)+len(extra))
	kvs = append(append(kvs, base...), extra...)
	return *e.c.put(k, e.pod, kvs)
}

// contentSets keeps the attribute sets of Recorder.Record calls across
// collections, keyed by the attributes' content: a series recorded with the
// same attributes as in the last collection reuses its set instead of
// sorting and hashing them again. It serves every collector without
// changing them; the kubelet collector's setCache also saves building the
// attribute slices. Sets unused in a collection are dropped at its end.
type contentSets struct {
	mu  sync.Mutex // held by the Runner for a whole collection
	gen uint64
	m   map[string]*contentEntry
	key []byte
	// built counts the sets built (misses), for tests.
	built int
}

type contentEntry struct {
	set attribute.Set
	gen uint64
}

// get returns the set of attrs (in their order: the same attributes in
// another order are another key and another entry of the same set).
func (c *contentSets) get(attrs []attribute.KeyValue) attribute.Set {
	key, ok := appendKey(c.key[:0], attrs)
	c.key = key
	if !ok {
		return attribute.NewSet(slices.Clone(attrs)...)
	}
	if e, hit := c.m[string(key)]; hit {
		e.gen = c.gen
		return e.set
	}
	if c.m == nil {
		c.m = map[string]*contentEntry{}
	}
	// attribute.NewSet sorts the slice it is given in place: given the
	// caller's, it reordered a container's attributes under the next
	// Record calls of the same collection, whose keys then differed from
	// the next collection's and missed every time.
	c.built++
	e := &contentEntry{set: attribute.NewSet(slices.Clone(attrs)...), gen: c.gen}
	c.m[string(key)] = e
	return e.set
}

func (c *contentSets) sweep() {
	for k, e := range c.m {
		if e.gen != c.gen {
			delete(c.m, k)
		}
	}
	c.gen++
}

// appendKey encodes attrs unambiguously (each key and value is
// length-prefixed and typed); it reports false for slice values, which are
// not cached.
func appendKey(b []byte, attrs []attribute.KeyValue) ([]byte, bool) {
	str := func(b []byte, s string) []byte {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		return append(b, s...)
	}
	for _, kv := range attrs {
		b = str(b, string(kv.Key))
		switch kv.Value.Type() {
		case attribute.STRING:
			b = append(b, 's')
			b = str(b, kv.Value.AsString())
		case attribute.INT64:
			b = append(b, 'i')
			b = strconv.AppendInt(b, kv.Value.AsInt64(), 10)
			b = append(b, ';')
		case attribute.BOOL:
			b = append(b, 'b')
			b = strconv.AppendBool(b, kv.Value.AsBool())
			b = append(b, ';')
		case attribute.FLOAT64:
			b = append(b, 'f')
			b = strconv.AppendUint(b, math.Float64bits(kv.Value.AsFloat64()), 16)
			b = append(b, ';')
		default:
			return b, false
		}
	}
	return b, true
}
