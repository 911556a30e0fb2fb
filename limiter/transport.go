package limiter

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Instrument makes every request made through cfg pay from this budget.
//
// It sets cfg.RateLimiter, so that client-go throttles requests (and its
// own retries) before building them, and wraps cfg's transport, because
// client-go does not throttle a watch's first attempt and because the
// transport is where responses are seen. A token paid in client-go's Wait
// is left as a credit the transport then uses instead of paying again, so
// each HTTP request costs one token; the transport also waits out the kill
// switch, backoff and breaker, classifies each response, and tracks open
// watches so the kill switch can close them.
//
// Instrumenting the same cfg twice is a no-op. The first instrumented cfg
// is also used for fleet-size discovery.
func (b *Budget) Instrument(cfg *rest.Config) {
	if l, ok := cfg.RateLimiter.(*clientGoLimiter); ok && l.b == b {
		return
	}
	cfg.RateLimiter = &clientGoLimiter{b: b}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &roundTripper{b: b, next: rt}
	})
	b.mu.Lock()
	if b.discover == nil {
		b.discover = rest.CopyConfig(cfg)
	}
	b.mu.Unlock()
}

// clientGoLimiter is the budget as client-go's flowcontrol.RateLimiter.
type clientGoLimiter struct{ b *Budget }

var _ flowcontrol.RateLimiter = (*clientGoLimiter)(nil)

// TryAccept takes a token only if the gate is open and one is available now.
func (l *clientGoLimiter) TryAccept() bool {
	b := l.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	if reason, _, _ := b.checkLocked(now, false); reason != "" {
		return false
	}
	b.resumeLocked(now)
	if !b.bucket.lim.AllowN(now, 1) {
		return false
	}
	b.bucket.credits++
	b.bucket.unsent++
	return true
}

func (l *clientGoLimiter) Accept() { _ = l.Wait(context.Background()) }

func (l *clientGoLimiter) Wait(ctx context.Context) error {
	_, err := l.b.acquire(ctx, false, nil)
	return err
}

// Stop does nothing: the budget outlives any one client.
func (l *clientGoLimiter) Stop() {}

func (l *clientGoLimiter) QPS() float32 {
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	return float32(l.b.bucket.rate())
}

type roundTripper struct {
	b    *Budget
	next http.RoundTripper
}

func (t *roundTripper) WrappedRoundTripper() http.RoundTripper { return t.next }

func (t *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.b
	callerCtx := req.Context()
	verb := verbOf(req)
	for {
		var w *watchBody
		attempt := req
		if verb == "watch" {
			// The watch gets its own cancel so that the kill switch can end
			// it whatever the transport (closing an HTTP/1 body does not
			// interrupt a blocked Read). acquire registers it under the
			// gate's lock: the switch either holds the request there or
			// finds it registered.
			ctx, cancel := context.WithCancel(callerCtx)
			attempt = req.WithContext(ctx)
			w = &watchBody{body: body{b: b, callerCtx: callerCtx}, reg: &b.watches, cancel: cancel}
		}
		probe, err := b.acquire(callerCtx, true, w)
		if err != nil {
			if w != nil {
				w.cancel()
			}
			return nil, err
		}
		start := b.clock.Now()
		resp, err := t.next.RoundTrip(attempt)
		now := b.clock.Now()
		code := "error"
		if resp != nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		b.requests.add(verb, code)
		if w != nil && w.killed.Load() {
			// The kill switch ended the watch during its handshake, not the
			// server. Returning the error would make client-go's reflector
			// relist; instead the request waits at the gate until the switch
			// is off and is sent again, from the same resourceVersion.
			b.observe(now, outcomeCanceled, 0, probe)
			if resp != nil {
				resp.Body.Close()
			}
			w.release()
			continue
		}
		o, class, retryAfter := classify(callerCtx, resp, err, now)
		if o == outcomeSuccess && verb != "watch" && b.latency.observe(now.Sub(start)) {
			o = outcomeSlow
		}
		b.observeClass(now, o, class, retryAfter, probe)
		if err != nil {
			if w != nil {
				w.release()
			}
			return nil, err
		}
		// The body is watched too: a connection that breaks mid-response is
		// backpressure like one that breaks before it.
		if w != nil {
			w.rc, w.started = resp.Body, now
			if s, err := strconv.Atoi(req.URL.Query().Get("timeoutSeconds")); err == nil && s > 0 {
				w.timeout = time.Duration(s) * time.Second
			}
			resp.Body = w
		} else {
			resp.Body = &body{b: b, callerCtx: callerCtx, rc: resp.Body}
		}
		return resp, nil
	}
}

// verbOf names a request as the apiserver's audit log would: get, list,
// watch, create, update, patch, delete, deletecollection.
func verbOf(req *http.Request) string {
	q := req.URL.Query()
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		if w := q.Get("watch"); w == "true" || w == "1" || strings.Contains(req.URL.Path, "/watch/") {
			return "watch"
		}
		if isCollection(req.URL.Path) {
			return "list"
		}
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		if isCollection(req.URL.Path) {
			return "deletecollection"
		}
		return "delete"
	}
	return strings.ToLower(req.Method)
}

// isCollection reports whether a resource path names a collection
// (/api/v1/pods, /apis/apps/v1/namespaces/x/daemonsets) rather than one
// object or a non-resource path.
func isCollection(path string) bool {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(segs) >= 2 && segs[0] == "api":
		segs = segs[2:]
	case len(segs) >= 3 && segs[0] == "apis":
		segs = segs[3:]
	default:
		return false
	}
	if len(segs) > 0 && segs[0] == "watch" {
		segs = segs[1:]
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		segs = segs[2:]
	}
	return len(segs) == 1 && segs[0] != ""
}
