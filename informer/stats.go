package informer

import (
	"context"

	"github.com/fleetagent/fleetagent/internal/selfmetrics"
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

// RegisterMetrics registers the fleetagent.informer.* self-metrics of
// selfmetrics.Table over the counters, each point with k8s.resource =
// "pods" or "nodes".
func (i *Informers) RegisterMetrics(m metric.Meter) error {
	set := selfmetrics.NewSet(m)
	counters := []struct {
		inst metric.Int64Observable
		get  func(ResourceStats) int64
	}{
		{set.Int64("fleetagent.informer.lists"), func(s ResourceStats) int64 { return s.Lists }},
		{set.Int64("fleetagent.informer.relists"), func(s ResourceStats) int64 { return s.Relists }},
		{set.Int64("fleetagent.informer.list_errors"), func(s ResourceStats) int64 { return s.ListErrors }},
		{set.Int64("fleetagent.informer.watches"), func(s ResourceStats) int64 { return s.Watches }},
		{set.Int64("fleetagent.informer.watch_errors"), func(s ResourceStats) int64 { return s.WatchErrors }},
		{set.Int64("fleetagent.informer.expired"), func(s ResourceStats) int64 { return s.Expired }},
		{set.Int64("fleetagent.informer.events"), func(s ResourceStats) int64 { return s.Events }},
		{set.Int64("fleetagent.informer.bookmarks"), func(s ResourceStats) int64 { return s.Bookmarks }},
	}
	objects := set.Int64("fleetagent.informer.objects")
	pods := metric.WithAttributeSet(attribute.NewSet(attribute.String("k8s.resource", "pods")))
	nodes := metric.WithAttributeSet(attribute.NewSet(attribute.String("k8s.resource", "nodes")))
	return set.Register(func(_ context.Context, o metric.Observer) error {
		s := i.Stats()
		for _, c := range counters {
			o.ObserveInt64(c.inst, c.get(s.Pods), pods)
			o.ObserveInt64(c.inst, c.get(s.Node), nodes)
		}
		o.ObserveInt64(objects, s.Pods.Objects, pods)
		o.ObserveInt64(objects, s.Node.Objects, nodes)
		return nil
	})
}
