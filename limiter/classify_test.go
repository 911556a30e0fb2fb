package limiter

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fleetagent/fleetagent/internal/testenv/metricsread"
)

// The servers below fail in one way each, on loopback only.

// fullAcceptQueue returns the address of a loopback listener whose accept
// queue is full, so that a connect to it times out: the socket listens
// with a backlog of 0 and is never accepted from, one connection fills
// the queue, and Linux then drops further SYNs (SYN cookies only apply to
// the SYN queue, not to a full accept queue).
func fullAcceptQueue(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ln := os.NewFile(uintptr(fd), "backlog-0 listener")
	t.Cleanup(func() { ln.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("the first connection to a backlog-0 listener should complete: %v", err)
	}
	t.Cleanup(func() { filler.Close() })
	return addr
}

// acceptLoop accepts connections on a fresh loopback listener and hands
// each to serve; everything is closed at cleanup.
func acceptLoop(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest reads one HTTP request from c.
func readRequest(c net.Conn) { _, _ = http.ReadRequest(bufio.NewReader(c)) }

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// hangingServer answers nothing until the test ends; got receives each
// request as it arrives.
func hangingServer(t *testing.T) (url string, got <-chan struct{}) {
	t.Helper()
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv.URL, arrived
}

// getStepping sends a GET while stepping the budget's fake clock a
// millisecond at a time (every real millisecond, for at most 30 s), so
// that a request waiting for its respread token gets it: the request
// itself meets a real loopback server in real time.
func getStepping(t *testing.T, client *http.Client, url string, clk *clocktesting.FakeClock) (*http.Response, error) {
	t.Helper()
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get(url)
		done <- result{resp, err}
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case r := <-done:
			return r.resp, r.err
		case <-tick.C:
			clk.Step(time.Millisecond)
		case <-deadline:
			t.Fatal("request did not return within 30 s")
		}
	}
}

// failingTransport has short timeouts so that each failure shows within
// a fraction of a second, and no connection reuse so that each request
// meets the server afresh.
func failingTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext,
		TLSHandshakeTimeout:   200 * time.Millisecond,
		ResponseHeaderTimeout: 200 * time.Millisecond,
		DisableKeepAlives:     true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// connErrorsMetric reads fleetagent.limiter.connection.errors by
// error.type from the budget's self-metrics.
func connErrorsMetric(t *testing.T, reader *metric.ManualReader) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, m := range metricsread.Collect(t, reader) {
		if m.Name != "fleetagent.limiter.connection.errors" {
			continue
		}
		for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
			v, _ := p.Attributes.Value("error.type")
			out[v.AsString()] = p.Value
		}
	}
	return out
}

// TestConnectionFailuresAreBackpressure sends one request into each way a
// struggling apiserver (or the network to it) fails, through the budget's
// transport over a real net/http transport on loopback. Each one must put
// the process into backoff and (threshold 1) open the breaker, name its
// cause in Degraded, count in the self-metric by class, and be what
// IsBackpressure calls backpressure in the error the client gets.
func TestConnectionFailuresAreBackpressure(t *testing.T) {
	for _, tc := range []struct {
		name, class, reason string
		url                 func(t *testing.T) string
		readBody            bool // the failure comes while reading the body
		// tries is how many requests to send: a dial timeout matches
		// context.DeadlineExceeded only when the dialer's context timer
		// wins a race with the socket's deadline, so one try would not
		// show reliably that it is taken for a cancellation.
		tries int
	}{
		{name: "dial timeout", class: "dial_timeout", reason: "connection error (dial timeout)", tries: 10,
			url: func(t *testing.T) string { return "http://" + fullAcceptQueue(t) + "/api/v1/pods" }},
		{name: "TLS handshake timeout", class: "tls_handshake_timeout", reason: "connection error (TLS handshake timeout)",
			url: func(t *testing.T) string {
				return "https://" + acceptLoop(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }) + "/api/v1/pods"
			}},
		{name: "response header timeout", class: "response_header_timeout", reason: "connection error (response header timeout)",
			url: func(t *testing.T) string { u, _ := hangingServer(t); return u + "/api/v1/pods" }},
		{name: "connection refused", class: "connection_refused", reason: "connection error (connection refused)",
			url: func(t *testing.T) string { return "http://" + closedPort(t) + "/api/v1/pods" }},
		{name: "connection reset", class: "connection_reset", reason: "connection error (connection reset)",
			url: func(t *testing.T) string {
				return "http://" + acceptLoop(t, func(c net.Conn) {
					readRequest(c)
					_ = c.(*net.TCPConn).SetLinger(0) // close with RST
					c.Close()
				}) + "/api/v1/pods"
			}},
		{name: "EOF before the response", class: "eof", reason: "connection error (connection closed before the response ended)",
			url: func(t *testing.T) string {
				return "http://" + acceptLoop(t, func(c net.Conn) { readRequest(c); c.Close() }) + "/api/v1/pods"
			}},
		{name: "EOF mid-response", class: "eof", reason: "connection error (connection closed before the response ended)", readBody: true,
			url: func(t *testing.T) string {
				return "http://" + acceptLoop(t, func(c net.Conn) {
					readRequest(c)
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":")
					c.Close()
				}) + "/api/v1/pods"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk := newTestBudget(t, Config{FleetQPS: 100, FleetSize: 1, Burst: 10, BreakerThreshold: 1})
			startSpread(b, clk)
			reader := metric.NewManualReader()
			mp := metric.NewMeterProvider(metric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			if err := b.RegisterMetrics(mp.Meter("limiter")); err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: &roundTripper{b: b, next: failingTransport(t)}}
			url := tc.url(t)
			tries := max(tc.tries, 1)
			matchedDeadline := 0
			for i := 0; i < tries; i++ {
				if i > 0 {
					// Past the backoff: the breaker lets the next request
					// through as its half-open probe.
					clk.Step(time.Hour)
				}
				start := time.Now()
				resp, err := getStepping(t, client, url, clk)
				if tc.readBody {
					if err != nil {
						t.Fatalf("want headers, then a broken body; got %v", err)
					}
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err == nil {
					t.Fatal("request succeeded")
				}
				if i == 0 {
					t.Logf("%s after %v: %v", tc.name, time.Since(start).Round(time.Millisecond), err)
				}
				if errors.Is(err, context.DeadlineExceeded) {
					matchedDeadline++
				}
				if !IsBackpressure(err) {
					t.Errorf("IsBackpressure(%v) = false", err)
				}
				if deg, why := b.Degraded(); !deg || !strings.Contains(why, "(last: "+tc.reason+")") {
					t.Errorf("Degraded() = %v %q, want it to name %q", deg, why, tc.reason)
				}
			}
			if tc.class == "dial_timeout" {
				t.Logf("%d of %d dial timeouts matched context.DeadlineExceeded", matchedDeadline, tries)
			}
			s := b.Stats()
			if s.ConnErrors != int64(tries) || !s.BackingOff || s.BreakerOpens != int64(tries) {
				t.Errorf("stats: connection errors %d, backing off %v, breaker opens %d; want %d, true, %d",
					s.ConnErrors, s.BackingOff, s.BreakerOpens, tries, tries)
			}
			if got := connErrorsMetric(t, reader); got[tc.class] != int64(tries) {
				t.Errorf("fleetagent.limiter.connection.errors = %v, want %s: %d", got, tc.class, tries)
			}
		})
	}
}

// TestStatusBackpressure: 429 and 5xx, with and without Retry-After, back
// off for at least the Retry-After and open the breaker.
func TestStatusBackpressure(t *testing.T) {
	for _, tc := range []struct {
		code       int
		retryAfter string
		want       time.Duration
		reason     string
	}{
		{429, "7", 7 * time.Second, "throttled"},
		{503, "", 0, "server error"},
		{500, "3", 3 * time.Second, "server error"},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.code)
			}))
			t.Cleanup(srv.Close)
			b, clk := newTestBudget(t, Config{FleetQPS: 100, FleetSize: 1, Burst: 10, BreakerThreshold: 1, InitialBackoff: 100 * time.Millisecond})
			startSpread(b, clk)
			client := &http.Client{Transport: &roundTripper{b: b, next: failingTransport(t)}}
			resp, err := client.Get(srv.URL + "/api/v1/pods")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			s := b.Stats()
			if !s.BackingOff || s.BreakerOpens != 1 || s.BackoffUntil.Sub(clk.Now()) < tc.want || s.LastRetryAfter != tc.want {
				t.Errorf("after %d Retry-After %q: backing off %v until +%v, breaker opens %d, last Retry-After %v; want at least %v",
					tc.code, tc.retryAfter, s.BackingOff, s.BackoffUntil.Sub(clk.Now()), s.BreakerOpens, s.LastRetryAfter, tc.want)
			}
			if deg, why := b.Degraded(); !deg || !strings.Contains(why, "(last: "+tc.reason+")") {
				t.Errorf("Degraded() = %v %q", deg, why)
			}
		})
	}
}

// deadlineCtx is a context whose deadline the test ends by hand, so that a
// caller's deadline can pass while a request is in flight with no timer.
type deadlineCtx struct {
	context.Context
	done chan struct{}
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.done }
func (c *deadlineCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// TestCallerGivingUpIsNotBackpressure: a request whose own context is
// canceled, or whose own deadline passes, while the server is working on
// it says nothing about the server: no backoff, no breaker, and
// IsBackpressure says no.
func TestCallerGivingUpIsNotBackpressure(t *testing.T) {
	for _, name := range []string{"canceled", "deadline"} {
		t.Run(name, func(t *testing.T) {
			b, clk := newTestBudget(t, Config{FleetQPS: 100, FleetSize: 1, Burst: 10, BreakerThreshold: 1})
			startSpread(b, clk)
			url, arrived := hangingServer(t)
			tr := failingTransport(t)
			tr.ResponseHeaderTimeout = 0 // only the caller ends the wait
			client := &http.Client{Transport: &roundTripper{b: b, next: tr}}
			var ctx context.Context
			var end func()
			if name == "canceled" {
				c, cancel := context.WithCancel(context.Background())
				ctx, end = c, cancel
			} else {
				c := &deadlineCtx{Context: context.Background(), done: make(chan struct{})}
				ctx, end = c, func() { close(c.done) }
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/v1/pods", nil)
			go func() {
				select {
				case <-arrived:
				case <-time.After(10 * time.Second):
				}
				end() // the caller gives up once the server has the request
			}()
			_, err := client.Do(req)
			if err == nil {
				t.Fatal("request succeeded")
			}
			if IsBackpressure(err) {
				t.Errorf("IsBackpressure(%v) = true for the caller giving up", err)
			}
			if s := b.Stats(); s.ConnErrors != 0 || s.BackingOff || s.BreakerOpens != 0 {
				t.Errorf("stats after the caller gave up: %+v", s)
			}
		})
	}
}

// eofBody is a watch stream that ends with a clean EOF when told to.
type eofBody struct{ end chan struct{} }

func (b *eofBody) Read([]byte) (int, error) { <-b.end; return 0, io.EOF }
func (b *eofBody) Close() error             { return nil }

// TestWatchEndingEarlyIsBackpressure: a watch that ends before the
// timeoutSeconds it asked for (an apiserver going away, or shedding
// watchers) is a connection error, even with a clean EOF; one that ends
// at its timeout, or that the caller stops, is not.
func TestWatchEndingEarlyIsBackpressure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		query   string
		after   time.Duration // fake time before the stream ends
		stop    bool          // the caller closes the body instead
		backoff bool
	}{
		{"clean EOF before the timeout", "watch=true&timeoutSeconds=300", 10 * time.Second, false, true},
		{"clean EOF with no timeout asked", "watch=true", time.Hour, false, true},
		{"clean EOF at the timeout", "watch=true&timeoutSeconds=300", 300 * time.Second, false, false},
		{"stopped by the caller", "watch=true&timeoutSeconds=300", 10 * time.Second, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk := newTestBudget(t, Config{FleetQPS: 100, FleetSize: 1, Burst: 10})
			startSpread(b, clk)
			body := &eofBody{end: make(chan struct{})}
			rt := &roundTripper{b: b, next: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 200, Body: body, Header: http.Header{}}, nil
			})}
			req, _ := http.NewRequest("GET", "https://api/api/v1/pods?"+tc.query, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			clk.Step(tc.after)
			if tc.stop {
				resp.Body.Close()
			}
			close(body.end)
			if _, err := resp.Body.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("read = %v, want EOF passed through", err)
			}
			resp.Body.Close()
			s := b.Stats()
			if s.BackingOff != tc.backoff || (s.ConnErrorsByClass["eof"] == 1) != tc.backoff {
				t.Errorf("backing off %v, eof errors %d; want backoff %v", s.BackingOff, s.ConnErrorsByClass["eof"], tc.backoff)
			}
		})
	}
}
