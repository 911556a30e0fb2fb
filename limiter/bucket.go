package limiter

import (
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
	// credits are tokens paid in client-go's Wait, not yet used by the
	// transport.
	credits int
	// resumes counts respreads.
	resumes uint64
}

func newBucket(fleetQPS float64, size, burst int, rnd *rand.Rand) bucket {
	k := bucket{fleetQPS: fleetQPS, size: size, burst: burst, rand: rnd, spreadPending: true}
	// Until the first request, the bucket is full; the first request
	// applies the spread (see spreadOnce).
	k.lim = rate.NewLimiter(rate.Limit(k.rate()), burst)
	return k
}

// rate is this node's share of the fleet budget, in requests per second.
func (k *bucket) rate() float64 { return k.fleetQPS / float64(k.size) }

// window is one token interval, 1/rate: the spread window.
func (k *bucket) window() time.Duration { return time.Duration(float64(time.Second) / k.rate()) }

// spread replaces the (full, never used) bucket with an empty one whose
// next token arrives at a uniformly random point in (now, now+window]. A
// fresh limiter is full; reserving all of it at now-(1-u)·window leaves it
// empty with its next token due u·window after now.
func (k *bucket) spread(now time.Time) {
	u := k.rand.Float64()
	lim := rate.NewLimiter(rate.Limit(k.rate()), k.burst)
	lim.ReserveN(now.Add(-time.Duration((1-u)*float64(k.window()))), k.burst)
	k.lim = lim
}

// spreadOnce applies the start-up spread at the first request, not at New:
// an agent may spend a while building clients before it sends anything,
// and the spread must be relative to when agents start talking, or a slow
// start would find a token already waiting.
func (k *bucket) spreadOnce(now time.Time) {
	if k.spreadPending {
		k.spreadPending = false
		k.spread(now)
	}
}

// respread is the spread again, for traffic resuming after the kill switch
// or an open breaker, when every agent may resume at once. The bucket
// keeps its history, so that the rate bound holds across the resume; it is
// drained of whole tokens (it filled while nothing was sent), and it
// returns a jitter, a uniformly random part of the window, for which the
// gate holds every request.
func (k *bucket) respread(now time.Time) time.Duration {
	k.resumes++
	k.credits = 0
	if k.spreadPending { // nothing sent yet: the start-up spread covers it
		k.spreadOnce(now)
		return 0
	}
	if n := int(k.lim.TokensAt(now)); n > 0 {
		k.lim.ReserveN(now, n)
	}
	return time.Duration(k.rand.Float64() * float64(k.window()))
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
