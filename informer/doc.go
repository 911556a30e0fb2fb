// Package informer runs the agent's view of Kubernetes: two shared
// informers scoped to one node, the pods bound to it
// (fieldSelector=spec.nodeName=<node>) and its own Node
// (fieldSelector=metadata.name=<node>), at the apiserver's minimum cost.
//
// # Request pattern
//
// Every LIST and WATCH goes through one ListerWatcher that overwrites the
// field selector on each request, so nothing cluster-scoped can be asked
// for. Resync is off, the wire format is protobuf, and the rest.Config's
// RateLimiter and WrapTransport (the limiter) are kept. In the default
// ModeListWatch the requests are client-go's reflector's:
//
//   - start: LIST ?resourceVersion=0, served from the watch cache through
//     its spec.nodeName index: O(pods on the node), no etcd read;
//   - then WATCH ?resourceVersion=<list RV>&allowWatchBookmarks=true, which
//     the reflector re-opens from its last resourceVersion every 5-10
//     minutes (bookmarks keep that resourceVersion fresh);
//   - after a watch fails with anything but "connection refused" or 429
//     (a 410 Gone, a 403 while a restarted apiserver's RBAC warms up):
//     LIST ?resourceVersion=<last RV>, served from the watch cache (not
//     older than RV), then WATCH again;
//   - only if that LIST itself fails with 410 or "too large resource
//     version" does the reflector list with resourceVersion="" (one etcd
//     round trip). No GET is ever made.
//
// The two informers take turns between a LIST and its WATCH: each WATCH is
// the next request after its own LIST (TestEachWatchFollowsItsList), one
// token of the agent's budget later. The apiserver serves that WATCH from
// the LIST's resourceVersion only while the version is in its watch
// history (75 s by default), and replays to it every event of the
// resource since then, cluster-wide, before filtering by node (counted in
// apiserver_init_events_total): the shorter the gap, the cheaper.
//
// # Streaming list or LIST+WATCH
//
// client-go v0.37 turns the WatchListClient feature on by default: the
// reflector then replaces the first LIST with a streaming list (WATCH
// ?sendInitialEvents=true&resourceVersionMatch=NotOlderThan). It has no
// per-informer option; its only per-ListerWatcher switch is the opt-out
// interface the reflector probes in NewReflectorWithOptions,
// IsWatchListSemanticsUnSupported() bool (client-go/util/watchlist), which
// this package's ListerWatcher implements: ModeListWatch returns true and
// leaves the process-wide gate alone. Turning streaming lists on for one
// informer while the gate is off is impossible; New refuses ModeWatchList
// then.
//
// Measured on the real kube-apiserver v1.37.2 and etcd v3.7.0 of
// internal/testenv/controlplane, 100 nodes x 30 pods (internal/testenv/simcluster), on a
// shared 2-core machine, 2026-11-28. Deltas of the apiserver's metrics.
//
// BenchmarkNodeStartCost, one node's start (-benchtime 30x), per start:
//
//	mode        pod requests  fetched objects  init events  etcd requests  apiserver CPU (2 runs)
//	list-watch  2 (LIST+WATCH)          30              0              0   25 ms,  9 ms
//	watch-list  1 (WATCH)                0          3,000              2   18 ms, 16 ms
//
// BenchmarkFleetStartCost, all 100 nodes' agents starting at once
// (-benchtime 5x), per fleet start, then again with 6,000 more pods on
// other nodes:
//
//	cluster     mode        init events  etcd requests  apiserver CPU  time to sync all
//	3,000 pods  list-watch            0              0        758 ms             2.0 s
//	3,000 pods  watch-list      300,000            200      1,130 ms             2.1 s
//	9,000 pods  list-watch            0              0        806 ms             2.4 s
//	9,000 pods  watch-list      900,000            200      2,096 ms             4.1 s
//
// (list-watch fetched 3,000 objects per fleet start at both sizes: 30 per
// node. CPU figures varied by about 20% between runs; the counts are exact.)
//
// A streaming list with a field selector walks the whole pod store for its
// initial events (apiserver_init_events_total = every pod in the cluster,
// per node) and filters afterwards, and because the reflector starts it
// with resourceVersion="" it costs a consistent read: one etcd request per
// resource per start, and again after a 410. The LIST with resourceVersion=0
// reads only the node's pods through the watch cache's spec.nodeName index
// and never reaches etcd. One node's start is cheap either way at 3,000
// pods, but a fleet start with streaming lists is O(nodes x pods): its
// apiserver CPU nearly doubled when the cluster tripled while LIST+WATCH
// stayed flat. ModeListWatch is therefore the default; ModeWatchList is
// kept to re-measure on later apiservers.
//
// BenchmarkSteadyStateWrite, all 100 agents watching (-benchtime 500x),
// per pod update:
//
//	pod written on             events to agents  watch events sent  apiserver CPU
//	a node without an agent                   0                  1         4.0 ms
//	an agent's node                           1                  2         4.5 ms
//
// The one watch event every write sends goes to kube-apiserver's own
// cluster-wide pod informer (user system:apiserver in the audit log), not to
// an agent: the watch cache dispatches pod events by spec.nodeName, so a
// write elsewhere in the cluster costs the agents nothing.
//
// # Restarts and 410 Gone
//
// Observed on v1.37.2 (TestNodeScope): a restarted apiserver's watch cache
// starts at etcd's current revision, which the apiserver's own start-up
// writes move past any client's resourceVersion, so the agent's resumed
// WATCH from its last resourceVersion is answered with a 410 Gone error
// event (or, for a moment after /readyz, a 403 while RBAC warms up). The
// agent then relists from that resourceVersion, from the cache, and
// watches on: one O(pods on the node) LIST per restart, no request with
// an empty resourceVersion. A watch that ends cleanly (its 5-10 minute
// timeout) is re-opened from the last resourceVersion without a LIST; one
// that ends with an error event (410, a stream cut mid-event) or that
// lasted under a second without events is followed by a LIST from the last
// resourceVersion: that is client-go's reflector, and the LIST is served
// by the watch cache at O(pods on the node).
//
// # Memory
//
// TransformPod and TransformNode strip managedFields, the last-applied
// annotation and the spec and status fields the collectors never read
// before objects enter the cache. BenchmarkCacheBytesPerPod, on
// testdata/pod.json (a Deployment pod with two containers, env, probes,
// volumes, managedFields and a last-applied annotation):
//
//	              heap bytes/pod  protobuf bytes/pod
//	as decoded          14,073               5,848
//	transformed          6,937               1,362
//
// # Self-metrics
//
// Stats and RegisterMetrics count lists, relists, list errors, watches,
// watch errors, 410s, events, bookmarks and cached objects per informer;
// LastError is the reason /readyz reports while degraded.
package informer
