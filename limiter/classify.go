package limiter

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// connClass is why a request got no (complete) response. Every class is
// backpressure: an overloaded or unreachable apiserver produces all of
// them, and none is the caller's own doing.
type connClass int

const (
	connNone                connClass = iota
	connDialTimeout                   // SYN unanswered: accept queue full, no backend behind a load balancer, partition
	connTLSHandshakeTimeout           // connected, but the TLS handshake did not finish in time
	connHeaderTimeout                 // request sent, no response headers in time
	connRefused                       // nothing listening
	connReset                         // the peer reset the connection
	connEOF                           // the peer closed the connection before or during the response
	connTimeout                       // another network timeout
	connOther                         // any other transport error
	numConnClasses
)

// String is the class as a self-metric attribute value.
func (c connClass) String() string {
	return [...]string{"", "dial_timeout", "tls_handshake_timeout", "response_header_timeout", "connection_refused",
		"connection_reset", "eof", "timeout", "other"}[c]
}

// describe is the class in words, for the degraded reason.
func (c connClass) describe() string {
	return [...]string{"", "dial timeout", "TLS handshake timeout", "response header timeout", "connection refused",
		"connection reset", "connection closed before the response ended", "network timeout", "transport error"}[c]
}

// classifyConn names the cause of a transport error. It never looks at a
// context: whether the caller gave up is decided from the caller's own
// context, because in Go a response-header timeout matches
// context.DeadlineExceeded, and so does a dial timeout whenever the
// dialer's context timer is seen before the socket's write deadline
// (net/fd_unix.go; measured here: about half of them).
func classifyConn(err error) connClass {
	var op *net.OpError
	var ne net.Error
	msg := err.Error()
	switch {
	case strings.Contains(msg, "TLS handshake timeout"): // net/http's tlsHandshakeTimeoutError is unexported
		return connTLSHandshakeTimeout
	case strings.Contains(msg, "timeout awaiting response headers"): // so is its timeoutError
		return connHeaderTimeout
	case errors.As(err, &op) && op.Op == "dial" && op.Timeout():
		return connDialTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return connRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		strings.Contains(msg, "http2: client connection lost"):
		return connReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(msg, "GOAWAY"):
		return connEOF
	case errors.As(err, &ne) && ne.Timeout():
		return connTimeout
	}
	return connOther
}

// classify reads a response (or the error in its place) by cause. callerCtx
// is the context the caller sent the request with: only its ending makes
// an error "canceled"; every other error is the apiserver or the network
// to it failing. retryAfter is the server's Retry-After on a 429 or 5xx.
func classify(callerCtx context.Context, resp *http.Response, err error, now time.Time) (outcome, connClass, time.Duration) {
	if err != nil {
		if callerCtx.Err() != nil {
			return outcomeCanceled, connNone, 0
		}
		return outcomeConn, classifyConn(err), 0
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return outcomeThrottled, connNone, parseRetryAfter(resp.Header.Get("Retry-After"), now)
	case resp.StatusCode >= 500:
		return outcomeServer, connNone, parseRetryAfter(resp.Header.Get("Retry-After"), now)
	}
	return outcomeSuccess, connNone, 0
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		if s > int64(time.Duration(1<<62)/time.Second) {
			s = int64(time.Duration(1<<62) / time.Second)
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// IsBackpressure reports whether err, as returned by a client-go call, is
// the apiserver (or the network to it) asking for less traffic: a 429, a
// 5xx, a server timeout, or any transport error (dial, TLS handshake and
// response-header timeouts, refused and reset connections, EOF). It agrees
// with how the budget's transport classifies a request: an error that is
// only a context's end (context.Canceled, or context.DeadlineExceeded
// without a network error under it) is the caller giving up, not
// backpressure. Such errors are retried by waiting, never by looping.
func IsBackpressure(err error) bool {
	if err == nil {
		return false
	}
	if apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err) {
		return true
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return status.Status().Code >= 500
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	switch classifyConn(err) {
	case connDialTimeout, connTLSHandshakeTimeout, connHeaderTimeout, connRefused, connReset, connEOF:
		return true
	case connTimeout, connOther:
		// A deadline with no network error under it is the caller's own
		// (a context, or http.Client.Timeout), however net/http wraps it.
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout exceeded") {
			return false
		}
	}
	// Whatever else net/http's client returned is a transport error.
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}
