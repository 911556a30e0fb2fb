package collector

import (
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// EntityHandleKey is the data-point attribute that stands for an entity's
// attributes when the Runner records with entity handles
// (WithEntityHandles): the point carries this one short attribute instead
// of the 10 to 20 attributes of its pod or container, and the exporter
// (exporter.Config.EntityHandles) puts the entity's attributes on the
// point's Resource in its place. Only a handle the registry no longer holds
// would be sent, as a point attribute, which the export alone never causes
// (exporter.Stats.UnresolvedHandles counts them).
const EntityHandleKey = "fleetagent.entity"

// Entities hands out entity handles: one short id per distinct set of
// entity attributes (IsResourceAttribute keys), for the exporter to read
// back with Attributes. An id always stands for the same attributes: a pod
// whose labels change gets a new id. An id not used for two collections is
// dropped, so deleted pods do not accumulate.
//
// Why: the OTLP exporter turns every attribute of every point into
// protobuf objects at each export; with a pod's attributes on each of its
// points that was half of what one interval allocated
// (BenchmarkIntervalAllocs).
type Entities struct {
	mu    sync.Mutex
	gen   uint64
	next  uint64
	byKey map[string]*entityEntry
	byID  map[string]*entityEntry
}

type entityEntry struct {
	id    string
	key   string
	attrs []attribute.KeyValue // sorted by key, as attribute.Set sorts
	gen   uint64
}

// NewEntities returns an empty registry.
func NewEntities() *Entities {
	return &Entities{byKey: map[string]*entityEntry{}, byID: map[string]*entityEntry{}}
}

// Attributes returns the entity attributes id stands for, sorted by key.
// The slice must not be modified.
func (e *Entities) Attributes(id string) ([]attribute.KeyValue, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.byID[id]
	if !ok {
		return nil, false
	}
	return en.attrs, true
}

// Len is the number of entities the registry holds.
func (e *Entities) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.byID)
}

// handle returns the entry for the entity attributes attrs (sorted by key,
// with unique keys, as from attribute.Set.ToSlice); key is their
// appendKey encoding.
func (e *Entities) handle(key []byte, attrs []attribute.KeyValue) *entityEntry {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en, ok := e.byKey[string(key)]; ok {
		en.gen = e.gen
		return en
	}
	e.next++
	en := &entityEntry{id: strconv.FormatUint(e.next, 36), key: string(key), attrs: attrs, gen: e.gen}
	e.byKey[en.key] = en
	e.byID[en.id] = en
	return en
}

// sweepLocked ends a collection: entities used neither in it nor in the
// one before are dropped. Keeping the previous collection's lets an export
// still being sent (or retried) when the next collection ends resolve
// every handle it holds. The caller holds e.mu and has marked the entities
// used in this collection (handleSets.sweep).
func (e *Entities) sweepLocked() {
	for id, en := range e.byID {
		if en.gen+1 < e.gen {
			delete(e.byID, id)
			delete(e.byKey, en.key)
		}
	}
	e.gen++
}

// handleSets converts the attribute sets the collectors record into sets
// with an entity handle in place of the entity attributes. Conversions are
// kept across collections, keyed by the recorded set's content, so a series
// recorded as in the last collection costs one map lookup.
type handleSets struct {
	ents     *Entities
	isEntity func(string) bool
	gen      uint64
	m        map[attribute.Distinct]*handleEntry
	key      []byte
	entity   []attribute.KeyValue
	point    []attribute.KeyValue
}

type handleEntry struct {
	orig attribute.Set
	conv attribute.Set
	// opts observes with conv: kept with it, so that an observation
	// allocates neither the option nor the slice that passes it (one of
	// each per data point, 7 % of the bytes an interval allocated).
	opts []metric.ObserveOption
	ent  *entityEntry // nil: the set has no entity attributes
	gen  uint64
	next *handleEntry // another set with the same hash
}

// convert returns the options that observe with set's entity attributes
// replaced by their handle.
func (h *handleSets) convert(set attribute.Set) []metric.ObserveOption {
	d := set.Equivalent()
	for e := h.m[d]; e != nil; e = e.next {
		if e.orig.Equals(&set) {
			e.gen = h.gen
			return e.opts
		}
	}
	e := &handleEntry{orig: set, gen: h.gen}
	h.entity, h.point = h.entity[:0], h.point[:0]
	for it := set.Iter(); it.Next(); {
		kv := it.Attribute()
		if h.isEntity(string(kv.Key)) {
			h.entity = append(h.entity, kv)
		} else {
			h.point = append(h.point, kv)
		}
	}
	key, ok := appendKey(h.key[:0], h.entity)
	h.key = key
	if len(h.entity) == 0 || !ok {
		e.conv = set
	} else {
		e.ent = h.ents.handle(key, append([]attribute.KeyValue(nil), h.entity...))
		kvs := make([]attribute.KeyValue, 0, len(h.point)+1)
		kvs = append(append(kvs, h.point...), attribute.String(EntityHandleKey, e.ent.id))
		e.conv = attribute.NewSet(kvs...)
	}
	e.opts = []metric.ObserveOption{metric.WithAttributeSet(e.conv)}
	if h.m == nil {
		h.m = map[attribute.Distinct]*handleEntry{}
	}
	e.next = h.m[d]
	h.m[d] = e
	return e.opts
}

// sweep drops the conversions not used since the last sweep, and ends the
// registry's collection with the entities of the conversions kept marked
// as used: one lock per collection, not one per recorded point.
func (h *handleSets) sweep() {
	h.ents.mu.Lock()
	defer h.ents.mu.Unlock()
	for d, e := range h.m {
		var head *handleEntry
		tail := &head
		for e != nil {
			next := e.next
			if e.gen == h.gen {
				*tail = e
				tail = &e.next
				if e.ent != nil {
					e.ent.gen = h.ents.gen
				}
			}
			e = next
		}
		*tail = nil
		if head == nil {
			delete(h.m, d)
		} else {
			h.m[d] = head
		}
	}
	h.gen++
	h.ents.sweepLocked()
}
