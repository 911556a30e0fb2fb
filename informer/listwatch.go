package informer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// scopedListWatch is the only way this package talks to the apiserver. It
// pins the field selector on every LIST and WATCH, whatever the reflector
// asks for, so a cluster-scoped request cannot be made by construction; it
// counts requests, errors and events; and it tells the reflector whether it
// may use streaming lists.
type scopedListWatch struct {
	resource      string // "pods" or "nodes", for errors and metrics
	fieldSelector string
	list          func(context.Context, metav1.ListOptions) (runtime.Object, error)
	watch         func(context.Context, metav1.ListOptions) (watch.Interface, error)
	watchListOff  bool
	st            *resourceState
	pair          *listPair // shared by the Informers' list-watches; nil: none
}

// listPair lets one informer at a time be between its LIST and the WATCH
// that follows it. Both informers start together; without it their
// requests reach the budget as LIST, LIST, WATCH, WATCH, and each WATCH
// waits two of the agent's token intervals after its LIST instead of one.
// A WATCH must reach the apiserver while its LIST's resourceVersion is
// still in the watch cache's history (75 s by default), or it fails with
// "too old resource version" and the reflector lists again
// (TestEachWatchFollowsItsList). The pair is released when the WATCH has
// been sent, when the LIST fails, or after maxPairHold as a safety net.
type listPair struct {
	sem    chan struct{}
	mu     sync.Mutex
	holder *scopedListWatch
	timer  *time.Timer
	holds  uint64 // counts acquisitions, so a stale timer releases nothing
}

// maxPairHold bounds how long a LIST keeps the pair when no WATCH follows
// (the reflector gave up between them): the other informer then goes on.
const maxPairHold = 2 * time.Minute

func newListPair() *listPair { return &listPair{sem: make(chan struct{}, 1)} }

// acquire takes the pair for lw before its LIST, unless lw already holds
// it (a relist with no watch in between). It waits at most maxPairHold.
func (p *listPair) acquire(ctx context.Context, lw *scopedListWatch) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	held := p.holder == lw
	p.mu.Unlock()
	if held {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t := time.NewTimer(maxPairHold)
	defer t.Stop()
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil // the holder never watched: go on unpaired
	}
	p.mu.Lock()
	p.holder = lw
	p.holds++
	hold := p.holds
	p.timer = time.AfterFunc(maxPairHold, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.holds == hold {
			p.releaseLocked(lw)
		}
	})
	p.mu.Unlock()
	return nil
}

// release gives the pair back if lw holds it.
func (p *listPair) release(lw *scopedListWatch) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(lw)
}

// close releases the pair and stops its timer, once the informers have
// stopped.
func (p *listPair) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holder != nil {
		p.releaseLocked(p.holder)
	}
}

func (p *listPair) releaseLocked(lw *scopedListWatch) {
	if p.holder != lw {
		return
	}
	p.holder = nil
	p.timer.Stop()
	<-p.sem
}

var (
	_ cache.ListerWatcher            = (*scopedListWatch)(nil)
	_ cache.ListerWatcherWithContext = (*scopedListWatch)(nil)
)

// IsWatchListSemanticsUnSupported is how client-go v0.37 lets one
// ListerWatcher opt out of streaming lists (the reflector checks it in
// NewReflectorWithOptions) without flipping the process-wide
// WatchListClient feature gate.
func (lw *scopedListWatch) IsWatchListSemanticsUnSupported() bool { return lw.watchListOff }

func (lw *scopedListWatch) List(opts metav1.ListOptions) (runtime.Object, error) {
	return lw.ListWithContext(context.Background(), opts)
}

func (lw *scopedListWatch) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return lw.WatchWithContext(context.Background(), opts)
}

func (lw *scopedListWatch) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	opts.FieldSelector = lw.fieldSelector
	if err := lw.pair.acquire(ctx, lw); err != nil {
		return nil, err // shutting down
	}
	lw.st.lists.Add(1)
	if lw.st.listed.Load() {
		lw.st.relists.Add(1)
	}
	obj, err := lw.list(ctx, opts)
	if err != nil {
		lw.pair.release(lw)
	}
	if err != nil && ctx.Err() != nil {
		return nil, err // shutting down: not an error of the apiserver's
	}
	if err != nil {
		lw.st.listErrors.Add(1)
		lw.st.setErr(fmt.Errorf("list %s with fieldSelector %s (resourceVersion=%q): %w", lw.resource, lw.fieldSelector, opts.ResourceVersion, err))
		return nil, err
	}
	lw.st.listed.Store(true)
	lw.st.clearErr()
	return obj, nil
}

func (lw *scopedListWatch) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.FieldSelector = lw.fieldSelector
	streaming := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	if streaming {
		// A streaming list is this informer's list, served as a watch.
		lw.st.lists.Add(1)
		if lw.st.listed.Load() {
			lw.st.relists.Add(1)
		}
	} else {
		lw.st.watches.Add(1)
	}
	w, err := lw.watch(ctx, opts)
	lw.pair.release(lw) // sent (or failed): the other informer may list
	if err != nil && ctx.Err() == nil {
		what := "watch"
		if streaming {
			what = "streaming list"
			lw.st.listErrors.Add(1)
		} else {
			lw.st.watchErrors.Add(1)
		}
		lw.st.setErr(fmt.Errorf("%s %s with fieldSelector %s (resourceVersion=%q): %w", what, lw.resource, lw.fieldSelector, opts.ResourceVersion, err))
		return nil, err
	}
	if err != nil {
		return nil, err // shutting down: not an error of the apiserver's
	}
	return newCountingWatch(ctx, w, lw, opts.ResourceVersion, streaming), nil
}

// countingWatch passes a watch's events through unchanged and counts them.
// It is not watch.Filter: that one's goroutine blocks forever sending an
// event nobody reads after Stop (found by the goleak check in
// TestLifecycle). Stop here ends the goroutine and waits for it.
type countingWatch struct {
	in       watch.Interface
	out      chan watch.Event
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newCountingWatch(ctx context.Context, in watch.Interface, lw *scopedListWatch, rv string, streaming bool) *countingWatch {
	w := &countingWatch{in: in, out: make(chan watch.Event), stop: make(chan struct{}), done: make(chan struct{})}
	lw.st.open.Add(1)
	go func() {
		defer close(w.done)
		defer close(w.out)
		defer lw.st.open.Add(-1)
		for {
			var e watch.Event
			var ok bool
			select {
			case <-w.stop:
				return
			case e, ok = <-in.ResultChan():
				if !ok {
					return
				}
			}
			lw.count(ctx, e, rv, streaming)
			select {
			case <-w.stop:
				return
			case w.out <- e:
			}
		}
	}()
	return w
}

func (w *countingWatch) ResultChan() <-chan watch.Event { return w.out }

// Stop stops the underlying watch and waits for the forwarding goroutine.
func (w *countingWatch) Stop() {
	w.stopOnce.Do(func() {
		close(w.stop)
		w.in.Stop()
	})
	<-w.done
}

func (lw *scopedListWatch) count(ctx context.Context, e watch.Event, rv string, streaming bool) {
	switch e.Type {
	case watch.Error:
		if ctx.Err() != nil {
			return // the stream was cut by our own shutdown
		}
		lw.st.watchErrors.Add(1)
		err := apierrors.FromObject(e.Object)
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			lw.st.expired.Add(1)
		}
		lw.st.setErr(fmt.Errorf("watch %s with fieldSelector %s (resourceVersion=%q): %w", lw.resource, lw.fieldSelector, rv, err))
	case watch.Bookmark:
		lw.st.bookmarks.Add(1)
		if streaming && isInitialEventsEnd(e.Object) {
			lw.st.listed.Store(true)
		}
		lw.st.clearErr()
	default:
		lw.st.events.Add(1)
		lw.st.clearErr()
	}
}

func isInitialEventsEnd(obj runtime.Object) bool {
	m, ok := obj.(metav1.Object)
	return ok && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true"
}

// resourceState is one informer's counters and last error. Counters are
// atomics so the reflector's goroutines never wait on a metrics reader.
type resourceState struct {
	resource string
	logger   *slog.Logger

	lists, relists, listErrors    atomic.Int64
	watches, watchErrors, expired atomic.Int64
	events, bookmarks             atomic.Int64
	open                          atomic.Int64 // watches whose stream has not ended
	listed                        atomic.Bool
	hasErr                        atomic.Bool
	mu                            sync.Mutex
	lastErr                       error
}

func (s *resourceState) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr == nil {
		s.logger.Warn("informer degraded", "resource", s.resource, "err", err)
	}
	s.lastErr = err
	s.hasErr.Store(true)
}

func (s *resourceState) clearErr() {
	if !s.hasErr.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		s.logger.Info("informer recovered", "resource", s.resource, "after", s.lastErr)
	}
	s.lastErr = nil
	s.hasErr.Store(false)
}

func (s *resourceState) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}
