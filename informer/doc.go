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
// BenchmarkNodeStartCost measures one node's informer start on the real
// kube-apiserver v1.37.2 holding 100 nodes x 30 pods (3,000 pods):
//
//	MEASUREMENTS
//
// The streaming list costs the apiserver the whole pod store per start
// (its initial-events pass walks every pod of the watch cache, then
// filters by field selector) and, because the reflector starts it with
// resourceVersion="", a consistent read: an etcd request per start and per
// relist. The LIST with resourceVersion=0 walks only the node's pods
// through the index and never reaches etcd. Across a fleet that restarts
// at once, O(cluster) per node is the O(N²) this agent exists to avoid, so
// ModeListWatch is the default; ModeWatchList remains for clusters whose
// apiserver indexes initial events.
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
// an empty resourceVersion. A full relist is avoided only while the
// apiserver keeps running: a dropped connection is re-watched from the
// last resourceVersion without a LIST.
//
// # Memory
//
// TransformPod and TransformNode strip managedFields, the last-applied
// annotation and the spec and status fields the collectors never read
// before objects enter the cache. BenchmarkCacheBytesPerPod, on
// testdata/pod.json (a Deployment pod with two containers, env, probes,
// volumes, managedFields and a last-applied annotation):
//
//	CACHEBYTES
//
// # Self-metrics
//
// Stats and RegisterMetrics count lists, relists, list errors, watches,
// watch errors, 410s, events, bookmarks and cached objects per informer;
// LastError is the reason /readyz reports while degraded.
package informer
