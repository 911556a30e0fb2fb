package limiter

import (
	"math"
	"math/rand/v2"
	"time"

	"golang.org/x/time/rate"
)

// bucket is this node's token bucket: rate FleetQPS/fleet size, depth
// Burst, with the start-up spread and the respread after traffic was held.
// Like the gate it takes time as an argument and has no lock of its own:
// the Budget serialises calls.
type bucket struct {
	fleetQPS float64
	size     int
	burst    int
	rand     *rand.Rand
	// lim is replaced by every spread; a request waiting on the old one
	// is woken (the Budget's changed channel) and re-reserves.
	lim           *rate.Limiter
	spreadPending bool // no request yet: the first one applies the spread
	// ref and phase place this budget's grid of token times after a
	// respread: ref + (k + phase)·window.
	ref   time.Time
	phase float64
	// credits are tokens paid in client-go's Wait, not yet used by the
	// transport; unsent counts every token paid from lim for a request not
	// yet sent (credits included), which a respread refunds.
	credits int
	unsent  int
	// resumes counts respreads; heldAt is the gate's holds count at the
	// last one.
	resumes uint64
	heldAt  uint64
}

func newBucket(fleetQPS float64, size, burst int, rnd *rand.Rand, now time.Time) bucket {
	k := bucket{fleetQPS: fleetQPS, size: size, burst: burst, rand: rnd, spreadPending: true, ref: now, phase: rnd.Float64()}
	// Until the first request, the bucket is full; the first request
	// applies the spread (see spreadOnce).
	k.lim = rate.NewLimiter(rate.Limit(k.rate()), burst)
	return k
}

// rate is this node's share of the fleet budget, in requests per second.
func (k *bucket) rate() float64 { return k.fleetQPS / float64(k.size) }

// window is one token interval, 1/rate: the spread window.
func (k *bucket) window() time.Duration { return time.Duration(float64(time.Second) / k.rate()) }

// respread puts the next token on this budget's grid: the times
// ref + (k + phase)·window, where phase is drawn once, uniformly, for the
// budget's whole life. It keeps at most one token, so that a bucket that
// filled while nothing was sent (idle, or held by the gate) delivers its
// next token at the next grid point instead of a burst at once; and it
// never adds a token (the next token comes no earlier than the bucket
// would give it), so the rate bound of the bucket holds across it.
//
// Why a grid and not a fresh random delay each time: after a respread,
// every request of the budget that waits for a token goes out on the grid,
// whatever happened in between (a refused retry, a success, another hold).
// In any stretch of time shorter than a window a budget then has at most
// one request, and the chance that its grid meets a given second is
// exactly 1/window, independently of every other agent's. A fleet of N
// agents resuming together therefore sends, in any second, a count bounded
// by Binomial(N, 1/window), mean FleetQPS, however its requests fare (see
// Allowance). A fresh random delay per respread does not give this: the
// retries of agents refused early, re-randomised, pile onto the next
// requests of the agents that succeeded (measured: 65/s in a fleet of
// 5000 at 50/s).
//
// The first request of a budget respreads a bucket that was never used
// (the start-up spread: the next grid point is uniformly random); every
// request that passes the gate after it held requests (kill switch,
// backoff, breaker) respreads again. It returns the time until the next
// token.
func (k *bucket) respread(now time.Time) time.Duration {
	k.resumes++
	level := 1.0
	if k.spreadPending {
		k.spreadPending = false
	} else {
		// Tokens paid for requests not yet sent go back first: those
		// requests pay again, from the respread bucket.
		level = min(k.lim.TokensAt(now)+float64(k.unsent), 1)
	}
	k.credits, k.unsent = 0, 0
	w := float64(k.window())
	earliest := float64(now.Sub(k.ref)) + (1-level)*w
	next := (math.Ceil(earliest/w-k.phase) + k.phase) * w
	wait := time.Duration(next - float64(now.Sub(k.ref)))
	k.lim = limiterAt(rate.Limit(k.rate()), k.burst, now, 1-float64(wait)/w)
	return wait
}

// spreadOnce applies the start-up spread at the first request, not at New:
// an agent may spend a while building clients before it sends anything,
// and the spread must be relative to when agents start talking, or a slow
// start would find a token already waiting.
func (k *bucket) spreadOnce(now time.Time) {
	if k.spreadPending {
		k.respread(now)
	}
}

// limiterAt returns a limiter at rate r and depth burst that holds level
// tokens at now, for level ≤ 1 ≤ burst. A new limiter is full; taking all
// of it at a time t leaves it empty at t, and each further token taken at
// t puts it one token in debt; the time that passes from t to now refills
// it to level.
func limiterAt(r rate.Limit, burst int, now time.Time, level float64) *rate.Limiter {
	lim := rate.NewLimiter(r, burst)
	window := float64(time.Second) / float64(r)
	debt := math.Ceil(max(-level, 0))
	t := now.Add(-time.Duration((level + debt) * window))
	lim.ReserveN(t, burst)
	for i := 0.0; i < debt; i++ {
		lim.ReserveN(t, 1)
	}
	return lim
}

// setSize changes the fleet size, and so the rate, from now on. It
// reports whether the size changed.
func (k *bucket) setSize(now time.Time, n int) bool {
	if n < 1 || n == k.size {
		return false
	}
	k.size = n
	k.lim.SetLimitAt(now, rate.Limit(k.rate()))
	return true
}
