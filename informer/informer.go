package informer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	clientfeatures "k8s.io/client-go/features"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Mode is how an informer fills its cache at start and after its
// resourceVersion expires.
type Mode string

const (
	// ModeListWatch lists with resourceVersion=0 (served from the watch
	// cache through the spec.nodeName index), then watches from the list's
	// resourceVersion. The default: see the package doc for the figures.
	ModeListWatch Mode = "list-watch"
	// ModeWatchList uses a streaming list (a WATCH with
	// sendInitialEvents=true). It needs client-go's WatchListClient feature
	// gate, which is on by default in v0.37.
	ModeWatchList Mode = "watch-list"
)

// DefaultSyncTimeout bounds WaitForSync when Options.SyncTimeout is zero.
const DefaultSyncTimeout = 2 * time.Minute

// Options configures Informers. NodeName is required; the zero value of
// every other field is a working default.
type Options struct {
	// NodeName is the node whose pods and Node object are cached, normally
	// from the downward API (spec.nodeName).
	NodeName string
	// Mode defaults to ModeListWatch.
	Mode Mode
	// SyncTimeout bounds WaitForSync. Zero means DefaultSyncTimeout.
	SyncTimeout time.Duration
	// Logger receives one line per state change. Nil means slog.Default().
	Logger *slog.Logger
}

// Informers caches the pods bound to one node and that node's Node object,
// each through a shared informer whose every LIST and WATCH carries a field
// selector for the node. Resync is off; the wire format is protobuf.
//
// Start returns quickly; WaitForSync waits, bounded, for the first list;
// Shutdown stops everything and waits. Read methods are safe for
// concurrent use and return objects shared with the cache: never mutate them.
type Informers struct {
	opts   Options
	logger *slog.Logger
	pods   cache.SharedIndexInformer
	node   cache.SharedIndexInformer
	podSt  *resourceState
	nodeSt *resourceState
	pair   *listPair // nil in watch-list mode

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// New builds the informers without contacting the apiserver. cfg is used as
// given (its RateLimiter and WrapTransport are kept, so every request passes
// the limiter) on a copy that asks for protobuf.
func New(cfg *rest.Config, opts Options) (*Informers, error) {
	if cfg == nil {
		return nil, errors.New("informer: nil rest.Config")
	}
	if opts.NodeName == "" {
		return nil, errors.New("informer: Options.NodeName is empty: set it to this node's name (downward API spec.nodeName)")
	}
	switch opts.Mode {
	case "":
		opts.Mode = ModeListWatch
	case ModeListWatch:
	case ModeWatchList:
		if !clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
			return nil, fmt.Errorf("informer: mode %q needs client-go's WatchListClient feature gate, which this process turned off (KUBE_FEATURE_WatchListClient=false?): use mode %q or enable the gate", ModeWatchList, ModeListWatch)
		}
	default:
		return nil, fmt.Errorf("informer: unknown mode %q: use %q or %q", opts.Mode, ModeListWatch, ModeWatchList)
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	logger := opts.Logger.With("node", opts.NodeName)

	c := rest.CopyConfig(cfg)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	client, err := corev1client.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("informer: build core/v1 client: %w", err)
	}

	i := &Informers{
		opts:   opts,
		logger: logger,
		podSt:  &resourceState{resource: "pods", logger: logger},
		nodeSt: &resourceState{resource: "nodes", logger: logger},
		done:   make(chan struct{}),
	}
	watchListOff := opts.Mode != ModeWatchList
	var pair *listPair
	if watchListOff {
		pair = newListPair() // a streaming list is one request: nothing to pair
	}
	i.pair = pair
	podLW := &scopedListWatch{
		resource:      "pods",
		fieldSelector: fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String(),
		list: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.Pods(metav1.NamespaceAll).List(ctx, o)
		},
		watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.Pods(metav1.NamespaceAll).Watch(ctx, o)
		},
		watchListOff: watchListOff,
		st:           i.podSt,
		pair:         pair,
	}
	nodeLW := &scopedListWatch{
		resource:      "nodes",
		fieldSelector: fields.OneTermEqualSelector("metadata.name", opts.NodeName).String(),
		list: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.Nodes().List(ctx, o)
		},
		watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.Nodes().Watch(ctx, o)
		},
		watchListOff: watchListOff,
		st:           i.nodeSt,
		pair:         pair,
	}
	i.pods = newInformer(podLW, &corev1.Pod{}, TransformPod, i.podSt)
	i.node = newInformer(nodeLW, &corev1.Node{}, TransformNode, i.nodeSt)
	return i, nil
}

func newInformer(lw *scopedListWatch, obj runtime.Object, t cache.TransformFunc, st *resourceState) cache.SharedIndexInformer {
	inf := cache.NewSharedIndexInformerWithOptions(lw, obj, cache.SharedIndexInformerOptions{
		ResyncPeriod:      0, // resync replays the cache to handlers; nothing here needs it
		ObjectDescription: lw.resource + " " + lw.fieldSelector,
	})
	// Both only fail once the informer has started, which it has not.
	_ = inf.SetTransform(t)
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		st.setErr(fmt.Errorf("%s: %w", lw.resource, err))
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	return inf
}

// Start starts both informers in the background and returns at once. They
// run until Shutdown; ctx only carries values (its cancellation does not
// stop them, as the agent's start context is shorter than its life).
func (i *Informers) Start(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return errors.New("informer: Start after Shutdown")
	}
	if i.started {
		return errors.New("informer: already started")
	}
	i.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	i.cancel = cancel
	var wg sync.WaitGroup
	wg.Go(func() { i.pods.RunWithContext(runCtx) })
	wg.Go(func() { i.node.RunWithContext(runCtx) })
	go func() {
		wg.Wait()
		close(i.done)
	}()
	i.logger.Info("informers started", "mode", string(i.opts.Mode))
	return nil
}

// WaitForSync waits until both caches hold a complete first list, for at
// most Options.SyncTimeout or until ctx ends. Its error names each informer
// that has not synced and the last error it saw (a 403 when RBAC is
// missing, a connection error when the apiserver is unreachable).
func (i *Informers) WaitForSync(ctx context.Context) error {
	i.mu.Lock()
	started := i.started
	i.mu.Unlock()
	if !started {
		return errors.New("informer: WaitForSync before Start")
	}
	ctx, cancel := context.WithTimeout(ctx, i.opts.SyncTimeout)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return i.HasSynced(), nil
	})
	if err == nil {
		i.logger.Info("informers synced", "pods", len(i.pods.GetStore().ListKeys()))
		return nil
	}
	var errs []error
	for _, x := range []struct {
		inf cache.SharedIndexInformer
		st  *resourceState
	}{{i.pods, i.podSt}, {i.node, i.nodeSt}} {
		if x.inf.HasSynced() {
			continue
		}
		last := x.st.err()
		if last == nil {
			last = errors.New("no error seen yet: the apiserver is slow or the client's rate limiter is holding requests")
		}
		errs = append(errs, fmt.Errorf("%s of node %s not synced: %w", x.st.resource, i.opts.NodeName, last))
	}
	return fmt.Errorf("informer: caches not synced within %s (%w): check that the agent's service account may get, list and watch pods and nodes, and that the apiserver is reachable: %w",
		i.opts.SyncTimeout, err, errors.Join(errs...))
}

// HasSynced reports whether both caches hold a complete first list.
func (i *Informers) HasSynced() bool { return i.pods.HasSynced() && i.node.HasSynced() }

// Watching reports whether both caches have synced and each has a watch
// whose stream is open: the caches are following the apiserver now, not
// holding what they last knew. A watch ended by the kill switch, a
// restart or a timeout counts as closed until it has been re-established
// (resumed, or relisted and watched again).
func (i *Informers) Watching() bool {
	return i.HasSynced() && i.podSt.open.Load() > 0 && i.nodeSt.open.Load() > 0
}

// Pods returns this node's pods from the cache. The pods are shared with
// the cache and stripped by TransformPod: read them, never modify them.
func (i *Informers) Pods() []*corev1.Pod {
	objs := i.pods.GetStore().List()
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// Node returns this node's Node object from the cache (stripped by
// TransformNode; never modify it), and false when it is not cached.
func (i *Informers) Node() (*corev1.Node, bool) {
	o, ok, err := i.node.GetStore().GetByKey(i.opts.NodeName)
	if err != nil || !ok {
		return nil, false
	}
	n, ok := o.(*corev1.Node)
	return n, ok
}

// AddPodHandler registers h for add, update and delete notifications of this
// node's pods. Handlers run on the informer's goroutine for h and must not
// block for long or modify the objects. Remove it with RemovePodHandler.
func (i *Informers) AddPodHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	return i.pods.AddEventHandler(h)
}

// RemovePodHandler unregisters a handler added with AddPodHandler.
func (i *Informers) RemovePodHandler(r cache.ResourceEventHandlerRegistration) error {
	return i.pods.RemoveEventHandler(r)
}

// AddNodeHandler registers h for notifications about this node's Node
// object, under the same rules as AddPodHandler.
func (i *Informers) AddNodeHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	return i.node.AddEventHandler(h)
}

// LastError returns the last list or watch error of either informer, or nil
// once each has since completed a list or received a watch event. It is
// the reason the agent's /readyz reports when degraded.
func (i *Informers) LastError() error {
	return errors.Join(i.podSt.err(), i.nodeSt.err())
}

// Shutdown stops both informers and waits for their goroutines, or until
// ctx ends. It is safe without Start and safe to call more than once.
func (i *Informers) Shutdown(ctx context.Context) error {
	i.mu.Lock()
	first := !i.stopped
	i.stopped = true
	started := i.started
	if i.cancel != nil {
		i.cancel()
	}
	i.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-i.done:
		i.pair.close() // a reflector that stopped between its LIST and WATCH held it
		if first {
			i.logger.Info("informers stopped")
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("informer: shutdown: informers still running: %w", ctx.Err())
	}
}
