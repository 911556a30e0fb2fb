package limiter

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// watchRegistry holds the open watches, so that the kill switch can end
// them.
type watchRegistry struct {
	mu   sync.Mutex
	open map[*watchBody]struct{}
}

func (r *watchRegistry) add(w *watchBody) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		r.open = map[*watchBody]struct{}{}
	}
	r.open[w] = struct{}{}
}

func (r *watchRegistry) remove(w *watchBody) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.open, w)
}

func (r *watchRegistry) all() []*watchBody {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*watchBody, 0, len(r.open))
	for w := range r.open {
		out = append(out, w)
	}
	return out
}

func (r *watchRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

// body is a response body that reports the connection breaking while it
// is read (reset, unexpected EOF) as backpressure, once. A read error after
// the caller closed the body or gave up is the caller's doing.
type body struct {
	b         *Budget
	callerCtx context.Context
	rc        io.ReadCloser
	closed    atomic.Bool
	failed    atomic.Bool
}

func (r *body) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err != nil && err != io.EOF {
		r.broken(err)
	}
	return n, err
}

// broken observes err as a connection error unless the caller caused it.
func (r *body) broken(err error) {
	if r.closed.Load() || r.callerCtx.Err() != nil || !r.failed.CompareAndSwap(false, true) {
		return
	}
	r.b.observeClass(r.b.clock.Now(), outcomeConn, classifyConn(err), 0, false)
}

func (r *body) Close() error {
	r.closed.Store(true)
	return r.rc.Close()
}

// watchBody is an open watch's response body, tracked so that the kill
// switch can end it. A watch ended by the kill switch reads as a clean
// end of stream, so that client-go re-establishes it from its last
// resourceVersion (through the then-closed gate) instead of relisting.
//
// A watch that the server or the network ends is backpressure when it
// ends with an error (reset, unexpected EOF) or ends cleanly before the
// timeoutSeconds it asked for: that is an apiserver going away (restart,
// graceful shutdown, a load balancer dropping its backend) or shedding
// watchers. Every agent sees it at the same instant; counting it as a
// connection error backs off and then respreads, so that nobody
// re-establishes its watches with a full bucket.
type watchBody struct {
	body
	reg     *watchRegistry
	cancel  context.CancelFunc
	killed  atomic.Bool
	once    sync.Once
	started time.Time     // when the response headers came
	timeout time.Duration // the timeoutSeconds asked for; 0: none
}

func (w *watchBody) Read(p []byte) (int, error) {
	n, err := w.rc.Read(p)
	switch {
	case err == nil:
	case w.killed.Load():
		err = io.EOF
	case err == io.EOF:
		if w.timeout == 0 || w.b.clock.Since(w.started) < w.timeout {
			w.broken(err) // ended before its time
		}
	default:
		w.broken(err)
	}
	return n, err
}

func (w *watchBody) Close() error {
	w.closed.Store(true)
	err := w.rc.Close()
	w.release()
	return err
}

func (w *watchBody) kill() {
	w.killed.Store(true)
	w.cancel()
}

func (w *watchBody) release() {
	w.once.Do(func() {
		w.cancel()
		w.reg.remove(w)
	})
}
