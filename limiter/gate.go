package limiter

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// BreakerState is the circuit breaker's state.
type BreakerState int

// The breaker is closed in normal operation, open after BreakerThreshold
// consecutive failures (no request passes until the backoff ends), and
// half-open after that (one probe at a time; its success closes it, its
// failure opens it again).
const (
	BreakerClosed BreakerState = iota
	BreakerHalfOpen
	BreakerOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// outcome is what a response says about the apiserver's health.
type outcome int

const (
	outcomeSuccess   outcome = iota // any response that is not backpressure, 4xx included
	outcomeThrottled                // 429
	outcomeServer                   // 5xx
	outcomeConn                     // the request did not get a response
	outcomeSlow                     // a response, but much slower than recently
	outcomeCanceled                 // the caller gave up; says nothing about the server
)

func (o outcome) String() string {
	return [...]string{"success", "throttled", "server error", "connection error", "slow response", "canceled"}[o]
}

func (o outcome) failure() bool {
	return o == outcomeThrottled || o == outcomeServer || o == outcomeConn
}

// gate decides whether a request may be sent at a given time: the kill
// switch, the jittered backoff after backpressure, and the circuit breaker
// and its half-open probe. It counts the times it closed (holds), so that
// the bucket can respread when traffic resumes after each of them.
//
// Time is an argument, as in x/time/rate, so tests replay synthetic
// timestamps. A gate has no lock, logger or counters: the Budget calls it
// under its own lock (together with the bucket, which must change in step
// with it), and logs and counts from the transitions it returns.
type gate struct {
	threshold     int           // consecutive failures that open the breaker
	maxRetryAfter time.Duration // cap on a server's Retry-After
	randomization float64       // backoff jitter: ±this fraction of the interval
	rand          *rand.Rand    // backoff jitter source
	bo            *backoff.ExponentialBackOff

	killed    bool
	until     time.Time // backoff: nothing passes before it
	lastCause outcome   // the most recent failure
	lastClass connClass // its class, when it was a connection error
	breaker   BreakerState
	probing   bool // half-open: the one probe is in flight
	consec    int  // consecutive failures
	// retryAfter is the last Retry-After the server sent (capped).
	retryAfter time.Duration
	// holds counts the times the gate closed: the kill switch turning on,
	// or a backoff starting (the breaker opens only with one).
	holds uint64
}

// gateChange is what one gate call changed: waiting requests re-check the
// gate when changed is set; the other fields are for logs and counters.
type gateChange struct {
	changed       bool
	halfOpened    bool
	breakerClosed bool
	breakerOpened bool
	// backoffStarted is set when a failure began a backoff (rather than
	// extending one); backoff is then its length.
	backoffStarted bool
	backoff        time.Duration
}

func newGate(cfg Config) gate {
	// The jitter is applied in nextBackoff with the injected Rand;
	// cenkalti's own jitter draws from the global math/rand, which tests
	// cannot seed.
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     cfg.InitialBackoff,
		RandomizationFactor: 0,
		Multiplier:          cfg.BackoffMultiplier,
		MaxInterval:         cfg.MaxBackoff,
		MaxElapsedTime:      0, // the agent never gives up; the breaker bounds the cost
		Stop:                backoff.Stop,
		Clock:               cfg.Clock,
	}
	bo.Reset()
	return gate{
		threshold:     cfg.BreakerThreshold,
		maxRetryAfter: cfg.MaxRetryAfter,
		randomization: cfg.BackoffRandomization,
		rand:          cfg.Rand,
		bo:            bo,
	}
}

// check says whether a request may pass at now, and if not, why and until
// when (zero: until the gate changes). With take, a half-open breaker's
// probe slot is taken by the caller, who must report its outcome with
// probe set. The backoff of an open breaker ending turns it half-open.
func (g *gate) check(now time.Time, take bool) (reason string, until time.Time, probe bool, c gateChange) {
	if g.killed {
		return "kill switch is on", time.Time{}, false, c
	}
	if now.Before(g.until) {
		if g.breaker == BreakerOpen {
			return "circuit breaker open", g.until, false, c
		}
		return "backing off", g.until, false, c
	}
	if g.breaker == BreakerOpen {
		g.breaker = BreakerHalfOpen
		c.halfOpened, c.changed = true, true
	}
	if g.breaker == BreakerHalfOpen {
		if g.probing {
			return "circuit breaker half-open, probe in flight", time.Time{}, false, c
		}
		if take {
			g.probing = true
		}
		return "", time.Time{}, take, c
	}
	return "", time.Time{}, false, c
}

// observe feeds one request's outcome at now into the backoff and the
// breaker. class is the cause of a connection error (outcomeConn). probe
// says whether the request held the half-open probe slot.
func (g *gate) observe(now time.Time, o outcome, class connClass, retryAfter time.Duration, probe bool) (c gateChange) {
	if probe {
		g.probing = false
		c.changed = true
	}
	switch {
	case o == outcomeSuccess, o == outcomeSlow:
		// The server answered: the breaker closes. A slow answer still
		// backs off, and keeps the backoff growing while it stays slow.
		g.consec = 0
		if o == outcomeSuccess {
			g.bo.Reset()
		}
		if g.breaker != BreakerClosed {
			g.breaker = BreakerClosed
			c.breakerClosed, c.changed = true, true
		}
		if o == outcomeSlow {
			g.backoff(now, o, 0, &c)
		}
	case o.failure():
		g.consec++
		g.lastCause, g.lastClass = o, class
		g.backoff(now, o, retryAfter, &c)
		if (probe || g.consec >= g.threshold) && g.breaker != BreakerOpen {
			g.breaker = BreakerOpen
			c.breakerOpened, c.changed = true, true
		}
	}
	return c
}

// backoff extends the backoff deadline by the next jittered exponential
// interval, never shorter than retryAfter (capped at maxRetryAfter). A
// deadline is only ever extended: a concurrent success must not cut a
// server's Retry-After short.
func (g *gate) backoff(now time.Time, o outcome, retryAfter time.Duration, c *gateChange) {
	d := g.nextBackoff()
	if retryAfter > g.maxRetryAfter {
		retryAfter = g.maxRetryAfter
	}
	if retryAfter > 0 {
		g.retryAfter = retryAfter
	}
	if d < retryAfter {
		d = retryAfter
	}
	until := now.Add(d)
	if !until.After(g.until) {
		return
	}
	if !now.Before(g.until) {
		c.backoffStarted, c.backoff = true, d
		g.holds++
	}
	g.until = until
	if o != g.lastCause {
		g.lastCause, g.lastClass = o, connNone
	}
	c.changed = true
}

// nextBackoff is the next exponential interval with ±randomization jitter.
func (g *gate) nextBackoff() time.Duration {
	d := g.bo.NextBackOff()
	f := 1 + g.randomization*(2*g.rand.Float64()-1)
	return time.Duration(f * float64(d))
}

// setKilled turns the kill switch on or off and reports whether it changed.
func (g *gate) setKilled(on bool) bool {
	if g.killed == on {
		return false
	}
	g.killed = on
	if on {
		g.holds++
	}
	return true
}

// backingOff reports whether a backoff holds requests at now.
func (g *gate) backingOff(now time.Time) bool { return now.Before(g.until) }

// cause is the most recent failure in words.
func (g *gate) cause() string {
	if g.lastCause == outcomeConn && g.lastClass != connNone {
		return fmt.Sprintf("%s (%s)", g.lastCause, g.lastClass.describe())
	}
	return g.lastCause.String()
}

// degraded reports whether the gate holds requests back at now, and why.
func (g *gate) degraded(now time.Time, killSwitchPath string) (bool, string) {
	switch {
	case g.killed:
		return true, fmt.Sprintf("kill switch is on (%s): no apiserver requests", killSwitchPath)
	case g.breaker == BreakerOpen:
		return true, fmt.Sprintf("circuit breaker open after %d consecutive failures (last: %s) until %s", g.consec, g.cause(), g.until.Format(time.RFC3339))
	case g.breaker == BreakerHalfOpen:
		return true, fmt.Sprintf("circuit breaker half-open after %d consecutive failures (last: %s): probing", g.consec, g.cause())
	case now.Before(g.until):
		return true, fmt.Sprintf("backing off after %s until %s", g.cause(), g.until.Format(time.RFC3339))
	}
	return false, ""
}
