package limiter

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestPayOnceAcrossBreakerClose: a request that paid in client-go's Wait
// while another was in flight, and was then held at the transport by the
// breaker that the other's 503 opened, pays once in all
// when the breaker closes: its Wait payment is refunded by the respread and
// it pays again from the respread bucket, so that PaidInClientGo +
// PaidInTransport equals the requests sent. (It used to pay twice: the
// respread zeroed its credit and it paid again on top.)
func TestPayOnceAcrossBreakerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTestBudget(t, Config{FleetQPS: 1, FleetSize: 1, Burst: 2, BreakerThreshold: 1,
			InitialBackoff: time.Second, MaxBackoff: time.Second, BackoffRandomization: noJitter})
		startSpread(b, clk) // a full bucket
		var mu sync.Mutex
		sends := 0
		release := make(chan struct{}) // B's answer
		rt := &roundTripper{b: b, next: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			sends++
			first := sends == 1
			mu.Unlock()
			if first {
				<-release
				return &http.Response{StatusCode: 503, Body: http.NoBody, Header: http.Header{}}, nil
			}
			return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
		})}
		get := func() error {
			req, _ := http.NewRequest("GET", "https://api/api/v1/pods", nil)
			resp, err := rt.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			return err
		}
		// B, a watch's first attempt, pays in the transport and is sent.
		bDone := make(chan error, 1)
		go func() { bDone <- get() }()
		synctest.Wait()
		// While B is in flight, A pays in Wait, as client-go does before
		// building the request: A holds a credit.
		if err := (&clientGoLimiter{b}).Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		// B's answer is a 503: the breaker opens.
		close(release)
		if err := <-bDone; err != nil {
			t.Fatal(err)
		}
		if s := b.Stats(); s.Breaker != BreakerOpen {
			t.Fatalf("breaker %v after a 503 with threshold 1", s.Breaker)
		}
		// A reaches the transport: held.
		done := make(chan error, 1)
		go func() { done <- get() }()
		synctest.Wait()
		if s := b.Stats(); s.HeldAtGate != 1 {
			t.Fatalf("%d requests held, want A", s.HeldAtGate)
		}
		// The breaker's backoff ends; A is the probe, pays from the
		// respread bucket at its grid point, succeeds and closes it.
		for i := 0; i < 10 && len(done) == 0; i++ {
			clk.Step(time.Second)
			synctest.Wait()
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		s := b.Stats()
		if s.Breaker != BreakerClosed {
			t.Fatalf("breaker %v after A's success", s.Breaker)
		}
		if paid := s.PaidInClientGo + s.PaidInTransport; paid != int64(sends) {
			t.Errorf("%d requests sent, %d paid (%d in client-go, %d in the transport): a request paid twice",
				sends, paid, s.PaidInClientGo, s.PaidInTransport)
		}
		b.mu.Lock()
		credits, unsent := b.bucket.credits, b.bucket.unsent
		b.mu.Unlock()
		if credits != 0 || unsent != 0 {
			t.Errorf("left over: %d credits, %d unsent payments", credits, unsent)
		}
	})
}

// handshakeServer answers a watch's first attempt only when its context
// ends (the handshake is in flight when the kill switch flips), and the
// later attempts at once with a stream that lasts until closed.
type handshakeServer struct {
	mu       sync.Mutex
	attempts []string // resourceVersion of each watch attempt
	inFlight chan struct{}
}

func (s *handshakeServer) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.attempts = append(s.attempts, req.URL.Query().Get("resourceVersion"))
	first := len(s.attempts) == 1
	s.mu.Unlock()
	if first {
		close(s.inFlight)
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	pr, pw := io.Pipe()
	go func() { <-req.Context().Done(); pw.CloseWithError(io.EOF) }()
	return &http.Response{StatusCode: 200, Body: pr, Header: http.Header{}}, nil
}

func (s *handshakeServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.attempts...)
}

// TestKillDuringWatchHandshakeResumes: the kill switch turning on while a
// watch's request is in flight (sent, no response yet) ends that attempt,
// but the caller (client-go's reflector) does not see an error, which
// would make it relist: the request waits at the gate while the switch is
// on and is then sent again, from the same resourceVersion.
func TestKillDuringWatchHandshakeResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTestBudget(t, Config{FleetQPS: 1, FleetSize: 1, Burst: 2})
		startSpread(b, clk)
		srv := &handshakeServer{inFlight: make(chan struct{})}
		rt := &roundTripper{b: b, next: srv}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://api/api/v1/pods?watch=true&resourceVersion=42&timeoutSeconds=300", nil)
			resp, err := rt.RoundTrip(req)
			done <- result{resp, err}
		}()
		<-srv.inFlight
		b.setKilled(true)
		synctest.Wait()
		select {
		case r := <-done:
			t.Fatalf("the watch request returned while the switch was on: %v", r.err)
		default:
		}
		if s := b.Stats(); s.HeldAtGate != 1 || len(srv.seen()) != 1 {
			t.Fatalf("%d requests held, %d attempts sent; want the watch held after its one attempt", s.HeldAtGate, len(srv.seen()))
		}
		clk.Step(time.Hour)
		synctest.Wait()
		if n := len(srv.seen()); n != 1 {
			t.Fatalf("%d attempts while the switch was on", n)
		}
		b.setKilled(false)
		synctest.Wait()       // the request respreads: it waits for its grid point
		clk.Step(time.Second) // a whole window: the grid point comes
		synctest.Wait()
		var r result
		select {
		case r = <-done:
		default:
			t.Fatal("the watch request still waits a window after the switch turned off")
		}
		if r.err != nil {
			t.Fatalf("watch request: %v", r.err)
		}
		if got := srv.seen(); len(got) != 2 || got[1] != "42" {
			t.Errorf("watch attempts from resourceVersions %v, want [42 42]", got)
		}
		if s := b.Stats(); s.WatchesOpen != 1 || s.Backoffs != 0 {
			t.Errorf("after the resume: %d watches open, %d backoffs; want 1 and none", s.WatchesOpen, s.Backoffs)
		}
		r.resp.Body.Close()
	})
}
