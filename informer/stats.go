package informer

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ResourceStats are one informer's counters since New.
type ResourceStats struct {
	// Lists counts LIST requests, and streaming lists (a WATCH with
	// sendInitialEvents=true) in ModeWatchList.
	Lists int64
	// Relists counts the Lists made after the first successful one: after a
	// 410 Gone, or after the watch could not be resumed.
	Relists int64
	// ListErrors counts Lists that failed.
	ListErrors int64
	// Watches counts WATCH requests that are not streaming lists.
	Watches int64
	// WatchErrors counts failed WATCH requests and error events on an open
	// watch (such as 410 Gone).
	WatchErrors int64
	// Expired counts the WatchErrors that were 410 Gone (resourceVersion
	// too old): each is followed by a relist from the last resourceVersion.
	Expired int64
	// Events counts ADDED, MODIFIED and DELETED events received.
	Events int64
	// Bookmarks counts BOOKMARK events received.
	Bookmarks int64
	// Objects is the number of objects in the cache now.
	Objects int64
}

// Stats is a snapshot of both informers' counters.
type Stats struct {
	Pods ResourceStats
	Node ResourceStats
}

// Total adds the two informers' counters.
func (s Stats) Total() ResourceStats {
	a, b := s.Pods, s.Node
	return ResourceStats{
		Lists: a.Lists + b.Lists, Relists: a.Relists + b.Relists, ListErrors: a.ListErrors + b.ListErrors,
		Watches: a.Watches + b.Watches, WatchErrors: a.WatchErrors + b.WatchErrors, Expired: a.Expired + b.Expired,
		Events: a.Events + b.Events, Bookmarks: a.Bookmarks + b.Bookmarks, Objects: a.Objects + b.Objects,
	}
}

// Stats returns a snapshot of the counters.
func (i *Informers) Stats() Stats {
	return Stats{
		Pods: i.podSt.snapshot(int64(len(i.pods.GetStore().ListKeys()))),
		Node: i.nodeSt.snapshot(int64(len(i.node.GetStore().ListKeys()))),
	}
}

func (s *resourceState) snapshot(objects int64) ResourceStats {
	return ResourceStats{
		Lists: s.lists.Load(), Relists: s.relists.Load(), ListErrors: s.listErrors.Load(),
		Watches: s.watches.Load(), WatchErrors: s.watchErrors.Load(), Expired: s.expired.Load(),
		Events: s.events.Load(), Bookmarks: s.bookmarks.Load(), Objects: objects,
	}
}

// RegisterMetrics registers observable instruments over the counters, each
// with the attribute k8s.resource = "pods" or "nodes":
// fleetagent.informer.lists, .relists, .list_errors, .watches,
// .watch_errors, .expired, .events, .bookmarks (counters) and .objects
// (gauge).
func (i *Informers) RegisterMetrics(m metric.Meter) error {
	type counter struct {
		name, unit, desc string
		get              func(ResourceStats) int64
	}
	counters := []counter{
		{"fleetagent.informer.lists", "{request}", "LIST requests and streaming lists made by the node-scoped informers.", func(s ResourceStats) int64 { return s.Lists }},
		{"fleetagent.informer.relists", "{request}", "Lists made after the first successful one (410 Gone, watch not resumable).", func(s ResourceStats) int64 { return s.Relists }},
		{"fleetagent.informer.list_errors", "{error}", "Lists that failed.", func(s ResourceStats) int64 { return s.ListErrors }},
		{"fleetagent.informer.watches", "{request}", "WATCH requests made by the node-scoped informers.", func(s ResourceStats) int64 { return s.Watches }},
		{"fleetagent.informer.watch_errors", "{error}", "Failed WATCH requests and error events on open watches.", func(s ResourceStats) int64 { return s.WatchErrors }},
		{"fleetagent.informer.expired", "{error}", "Watches ended by 410 Gone (resourceVersion too old).", func(s ResourceStats) int64 { return s.Expired }},
		{"fleetagent.informer.events", "{event}", "Watch events (added, modified, deleted) received.", func(s ResourceStats) int64 { return s.Events }},
		{"fleetagent.informer.bookmarks", "{event}", "Watch bookmarks received.", func(s ResourceStats) int64 { return s.Bookmarks }},
	}
	var errs []error
	instruments := make([]metric.Int64ObservableCounter, len(counters))
	observables := make([]metric.Observable, 0, len(counters)+1)
	for k, c := range counters {
		inst, err := m.Int64ObservableCounter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.desc))
		errs = append(errs, err)
		instruments[k] = inst
		observables = append(observables, inst)
	}
	objects, err := m.Int64ObservableGauge("fleetagent.informer.objects", metric.WithUnit("{object}"),
		metric.WithDescription("Objects in the node-scoped informers' caches."))
	errs = append(errs, err)
	observables = append(observables, objects)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	pods := metric.WithAttributeSet(attribute.NewSet(attribute.String("k8s.resource", "pods")))
	nodes := metric.WithAttributeSet(attribute.NewSet(attribute.String("k8s.resource", "nodes")))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := i.Stats()
		for k, c := range counters {
			o.ObserveInt64(instruments[k], c.get(s.Pods), pods)
			o.ObserveInt64(instruments[k], c.get(s.Node), nodes)
		}
		o.ObserveInt64(objects, s.Pods.Objects, pods)
		o.ObserveInt64(objects, s.Node.Objects, nodes)
		return nil
	}, observables...)
	return err
}
