package limiter

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

// quarterSource makes rand.Float64 return 0.25.
type quarterSource struct{}

func (quarterSource) Uint64() uint64 { return 1 << 51 }

// nextGridPoint is the first point of a budget's grid, ref + (k +
// phase)·window, at or after t.
func nextGridPoint(ref, t time.Time, phase float64, window time.Duration) time.Duration {
	w := float64(window)
	k := math.Ceil(float64(t.Sub(ref))/w - phase)
	return time.Duration((k+phase)*w) - t.Sub(ref)
}

// TestRespreadLevels: a respread keeps at most one token and puts the next
// one on the budget's grid (here ref t0, phase 0.25, window 10 s: t0+2.5s,
// t0+12.5s, ...), never earlier than the bucket would have given it, and
// never adds a token. Synthetic timestamps only.
func TestRespreadLevels(t *testing.T) {
	for _, tc := range []struct {
		name   string
		at     time.Duration // after t0
		before float64       // tokens at the respread
		next   time.Duration // until the next token
	}{
		{"full bucket (idle, or held long)", 0, 3, 2500 * time.Millisecond},
		{"one token", 0, 1, 2500 * time.Millisecond},
		{"full, later", 100 * time.Second, 3, 2500 * time.Millisecond},
		{"full, just past a grid point", 2600 * time.Millisecond, 3, 9900 * time.Millisecond},
		{"half a token: no earlier than 5 s", 0, 0.5, 12500 * time.Millisecond},
		{"just spent: no earlier than 10 s", 0, 0, 12500 * time.Millisecond},
		{"in debt by half a token: no earlier than 15 s", 0, -0.5, 22500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newBucket(1, 10, 3, rand.New(quarterSource{}), t0)
			k.spreadPending = false
			now := t0.Add(tc.at)
			k.lim = limiterAt(k.lim.Limit(), 3, now, tc.before)
			before := k.lim.TokensAt(now)
			next := k.respread(now)
			if after := k.lim.TokensAt(now); after > before {
				t.Errorf("respread added tokens: %v before, %v after", before, after)
			}
			if next != tc.next {
				t.Errorf("next token in %v, want %v", next, tc.next)
			}
			// The limiter agrees with what respread reports.
			if d := k.lim.ReserveN(now, 1).DelayFrom(now); (d - next).Abs() > time.Microsecond {
				t.Errorf("limiter's next token in %v, respread said %v", d, next)
			}
		})
	}
	// The start-up spread is a respread of a bucket never used: the next
	// grid point after the first request.
	k := newBucket(1, 10, 3, rand.New(quarterSource{}), t0)
	if next := k.respread(t0.Add(time.Minute)); next != 2500*time.Millisecond || k.spreadPending {
		t.Errorf("start-up spread: next token in %v, want 2.5s", next)
	}
}

// TestRespreadAfterEveryHold: after each kind of hold (the kill switch,
// a backoff, the breaker and its probe), the first request does not find
// the tokens an idle bucket saved: it waits for the next point of its
// grid (ref t0, phase 0.25, window 2 s), as the start-up spread does.
// Without this, every agent whose connections break at the same instant
// comes back with a full bucket.
func TestRespreadAfterEveryHold(t *testing.T) {
	const window = 2 * time.Second // 0.5 requests/s
	for _, hold := range []string{"kill switch", "backoff", "breaker"} {
		t.Run(hold, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, clk := newTestBudget(t, Config{FleetQPS: 1, FleetSize: 2, Burst: 2, BreakerThreshold: 2,
					InitialBackoff: time.Second, MaxBackoff: time.Second, BackoffRandomization: noJitter, Rand: rand.New(quarterSource{})})
				startSpread(b, clk) // idle for an hour: the bucket is full
				code := 503
				sent := make(chan time.Time, 10)
				rt := &roundTripper{b: b, next: roundTripFunc(func(req *http.Request) (*http.Response, error) {
					sent <- clk.Now()
					return &http.Response{StatusCode: code, Body: http.NoBody, Header: http.Header{}}, nil
				})}
				send := func() <-chan struct{} {
					done := make(chan struct{})
					go func() {
						defer close(done)
						req, _ := http.NewRequestWithContext(context.Background(), "GET", "https://api/api/v1/pods", nil)
						if resp, err := rt.RoundTrip(req); err == nil {
							resp.Body.Close()
						}
					}()
					return done
				}
				switch hold {
				case "kill switch":
					b.setKilled(true)
					clk.Step(time.Hour)
					b.setKilled(false)
				case "backoff": // one 503: a 1 s backoff
					<-send()
					<-sent
					clk.Step(time.Hour)
				case "breaker": // two 503s open it
					<-send()
					<-sent
					clk.Step(time.Hour)
					done := send() // respread: waits for its grid point
					synctest.Wait()
					clk.Step(nextGridPoint(t0, clk.Now(), 0.25, window))
					<-done
					<-sent
					if b.Stats().Breaker != BreakerOpen {
						t.Fatalf("breaker %v after two 503s", b.Stats().Breaker)
					}
					clk.Step(time.Hour + 300*time.Millisecond) // off the grid
				}
				code = 200
				resumed := clk.Now()
				want := nextGridPoint(t0, resumed, 0.25, window)
				if want <= 0 || want > window {
					t.Fatalf("test setup: next grid point %v after the resume", want)
				}
				done := send()
				synctest.Wait()
				select {
				case at := <-sent:
					t.Fatalf("first request after the %s hold sent %v after it: the bucket was not respread", hold, at.Sub(resumed))
				default:
				}
				clk.Step(want - time.Millisecond)
				synctest.Wait()
				select {
				case at := <-sent:
					t.Fatalf("first request after the %s hold sent %v after it, want %v", hold, at.Sub(resumed), want)
				default:
				}
				clk.Step(time.Millisecond)
				<-done
				if at := <-sent; at.Sub(resumed) != want {
					t.Errorf("first request after the %s hold sent %v after it, want %v", hold, at.Sub(resumed), want)
				}
			})
		})
	}
}
