package limiter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/time/rate"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
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

// Budget is one process's apiserver request budget. Its methods are safe
// for concurrent use.
type Budget struct {
	cfg   Config
	clock clock.WithTicker
	log   *slog.Logger

	mu sync.Mutex
	// lim is replaced once, by the start-up spread at the first request.
	lim *rate.Limiter
	// resumeAt holds requests back for the resume jitter after the kill
	// switch or the breaker let traffic resume; gen counts resumes.
	resumeAt      time.Time
	gen           uint64
	spreadPending bool // the first request has not applied the start-up spread yet
	fleetSize     int
	changed       chan struct{} // closed and replaced on every gate change
	killed        bool
	bo            *backoff.ExponentialBackOff
	until         time.Time // no request passes before this (backoff)
	lastCause     outcome
	breaker       BreakerState
	probing       bool // half-open: the one probe is in flight
	consec        int
	latencyEW     time.Duration // moving average of non-watch latency
	credits       int           // tokens paid by client-go's Wait, not yet used by the transport
	watches       map[*watchBody]struct{}
	discover      *rest.Config
	reqs          map[verbCode]int64

	retryAfterLast time.Duration
	killErr        string // last kill-switch read error, to log each once

	lifeMu   sync.Mutex
	started  bool
	shutdown bool
	cancel   context.CancelFunc
	done     sync.WaitGroup

	// counters read by Stats and the metrics callbacks
	tokensWaited    atomic.Int64
	paidClientGo    atomic.Int64
	paidTransport   atomic.Int64
	waitNanos       atomic.Int64
	throttled       atomic.Int64
	serverErrors    atomic.Int64
	connErrors      atomic.Int64
	slow            atomic.Int64
	backoffs        atomic.Int64
	breakerOpens    atomic.Int64
	killFlips       atomic.Int64
	watchesKilled   atomic.Int64
	fleetRefreshes  atomic.Int64
	fleetRefreshErr atomic.Int64
}

type verbCode struct{ verb, code string }

// New returns a Budget for cfg, or every problem Validate finds. The
// budget's first token arrives at a uniformly random point in the window
// 1/rate after its first request (the start-up spread), so agents started
// together spend the fleet budget evenly instead of all at once.
func New(cfg Config) (*Budget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b := &Budget{
		cfg:     cfg,
		clock:   cfg.Clock,
		log:     cfg.Logger.With("component", "limiter"),
		changed: make(chan struct{}),
		watches: map[*watchBody]struct{}{},
		reqs:    map[verbCode]int64{},
	}
	b.fleetSize = cfg.FleetSize
	if b.fleetSize == 0 {
		b.fleetSize = cfg.AssumedFleetSize
	}
	b.bo = &backoff.ExponentialBackOff{
		InitialInterval:     cfg.InitialBackoff,
		RandomizationFactor: cfg.BackoffRandomization,
		Multiplier:          cfg.BackoffMultiplier,
		MaxInterval:         cfg.MaxBackoff,
		MaxElapsedTime:      0, // the agent never gives up; the breaker bounds the cost
		Stop:                backoff.Stop,
		Clock:               cfg.Clock,
	}
	b.bo.Reset()
	// Until the first request, the bucket is full; the first request
	// applies the spread (see spreadOnceLocked).
	b.lim = rate.NewLimiter(rate.Limit(b.rateLocked()), cfg.Burst)
	b.spreadPending = true
	return b, nil
}

// rateLocked is this node's share of the fleet budget.
func (b *Budget) rateLocked() float64 {
	return b.cfg.FleetQPS / float64(b.fleetSize)
}

// spreadLocked replaces the (full, never used) bucket with an empty one
// whose next token arrives at a uniformly random point in (now,
// now+1/rate]: the spread window. A fresh limiter is full; reserving all of
// it at now-(1-u)/rate leaves it empty with its next token due u/rate
// after now.
func (b *Budget) spreadLocked(now time.Time) {
	r := b.rateLocked()
	window := time.Duration(float64(time.Second) / r)
	u := b.cfg.Rand.Float64()
	lim := rate.NewLimiter(rate.Limit(r), b.cfg.Burst)
	lim.ReserveN(now.Add(-time.Duration((1-u)*float64(window))), b.cfg.Burst)
	b.lim = lim
}

// spreadOnceLocked applies the start-up spread at the first request, not
// at New: an agent may spend a while building clients before it sends
// anything, and the spread must be relative to when agents start talking,
// or a slow start would find a token already waiting.
func (b *Budget) spreadOnceLocked(now time.Time) {
	if b.spreadPending {
		b.spreadPending = false
		b.spreadLocked(now)
	}
}

// respreadLocked is the spread again, for traffic resuming after the kill
// switch or an open breaker, when every agent may resume at once. The
// bucket keeps its history, so that the rate bound holds across the
// resume; it is drained of whole tokens (it filled while nothing was
// sent), and nothing passes for a uniformly random part of the window.
func (b *Budget) respreadLocked(now time.Time) time.Duration {
	b.gen++
	b.credits = 0
	if b.spreadPending { // nothing sent yet: the start-up spread covers it
		b.spreadOnceLocked(now)
		return 0
	}
	if n := int(b.lim.TokensAt(now)); n > 0 {
		b.lim.ReserveN(now, n)
	}
	window := time.Duration(float64(time.Second) / b.rateLocked())
	jitter := time.Duration(b.cfg.Rand.Float64() * float64(window))
	b.resumeAt = now.Add(jitter)
	return jitter
}

// notifyLocked wakes every request waiting at the gate.
func (b *Budget) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// gateLocked says whether a request may pass at now, and if not, why and
// until when (zero: until something changes). With take, a half-open
// breaker's probe slot is taken by the caller.
func (b *Budget) gateLocked(now time.Time, take bool) (reason string, until time.Time, probe bool) {
	if b.killed {
		return "kill switch is on", time.Time{}, false
	}
	if now.Before(b.resumeAt) {
		return "resuming with jitter", b.resumeAt, false
	}
	if now.Before(b.until) {
		if b.breaker == BreakerOpen {
			return "circuit breaker open", b.until, false
		}
		return "backing off", b.until, false
	}
	if b.breaker == BreakerOpen {
		b.breaker = BreakerHalfOpen
		b.log.Info("circuit breaker half-open: letting one probe through")
		b.notifyLocked()
	}
	if b.breaker == BreakerHalfOpen {
		if b.probing {
			return "circuit breaker half-open, probe in flight", time.Time{}, false
		}
		if take {
			b.probing = true
		}
		return "", time.Time{}, take
	}
	return "", time.Time{}, false
}

// acquire blocks until a request may be sent: the gate is open (kill switch
// off, no backoff, breaker not open) and a token is paid, either from the
// bucket or from a credit that client-go's Wait already paid. With
// transport, the final gate check also takes the half-open probe slot and
// may use a credit; without (client-go's Wait), it adds a credit.
func (b *Budget) acquire(ctx context.Context, transport bool) (probe bool, err error) {
	start := b.clock.Now()
	defer func() { b.waitNanos.Add(int64(b.clock.Since(start))) }()
	paid := false
	for {
		b.mu.Lock()
		now := b.clock.Now()
		reason, until, probe := b.gateLocked(now, paid && transport)
		if reason == "" {
			if paid {
				if !transport {
					b.credits++
				}
				b.mu.Unlock()
				return probe, nil
			}
			if transport && b.credits > 0 {
				b.credits--
				paid = true
				b.mu.Unlock()
				continue
			}
			b.spreadOnceLocked(now)
			lim, ch := b.lim, b.changed
			b.mu.Unlock()
			ok, err := b.payToken(ctx, lim, ch)
			if err != nil {
				return false, err
			}
			paid = ok
			if ok && transport {
				b.paidTransport.Add(1)
			} else if ok {
				b.paidClientGo.Add(1)
			}
			continue // the gate may have closed while waiting for the token
		}
		ch := b.changed
		b.mu.Unlock()
		if err := b.waitUntil(ctx, ch, now, until); err != nil {
			return false, fmt.Errorf("limiter: waiting to send a request (%s): %w", reason, err)
		}
	}
}

// payToken takes one token from lim, waiting for it with the injected
// clock. A wait that is abandoned gives the token back: when ctx ends, and
// when the budget changes (a new rate after a fleet-size refresh, a new
// spread, a gate closing), so that the caller re-reserves under the new
// state instead of keeping a slot computed under the old one.
func (b *Budget) payToken(ctx context.Context, lim *rate.Limiter, changed <-chan struct{}) (bool, error) {
	now := b.clock.Now()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, fmt.Errorf("limiter: burst %d cannot hold one token; set Burst to at least 1", b.cfg.Burst)
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		return true, nil
	}
	t := b.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		r.CancelAt(b.clock.Now())
		return false, fmt.Errorf("limiter: waiting %v for a token: %w", d, ctx.Err())
	case <-changed:
		r.CancelAt(b.clock.Now())
		return false, nil
	case <-t.C():
		b.tokensWaited.Add(1)
		return true, nil
	}
}

// waitUntil returns when ch is closed, the clock reaches until (if set), or
// ctx is done.
func (b *Budget) waitUntil(ctx context.Context, ch <-chan struct{}, now, until time.Time) error {
	var timeout <-chan time.Time
	if !until.IsZero() {
		t := b.clock.NewTimer(until.Sub(now))
		defer t.Stop()
		timeout = t.C()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	case <-timeout:
	}
	return nil
}

// observe feeds one request's outcome into backoff and breaker. probe says
// whether this request held the half-open probe slot.
func (b *Budget) observe(now time.Time, o outcome, retryAfter time.Duration, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
		defer b.notifyLocked()
	}
	switch {
	case o == outcomeSuccess, o == outcomeSlow:
		// The server answered: the breaker closes. A slow answer still
		// backs off, and keeps the backoff growing while it stays slow.
		b.consec = 0
		if o == outcomeSuccess {
			b.bo.Reset()
		}
		if b.breaker != BreakerClosed {
			b.breaker = BreakerClosed
			jitter := b.respreadLocked(now)
			b.log.Info("circuit breaker closed: apiserver answered; resuming with jitter", "jitter", jitter)
			b.notifyLocked()
		}
		if o == outcomeSlow {
			b.slow.Add(1)
			b.backoffLocked(now, o, 0)
		}
	case o.failure():
		switch o {
		case outcomeThrottled:
			b.throttled.Add(1)
		case outcomeServer:
			b.serverErrors.Add(1)
		case outcomeConn:
			b.connErrors.Add(1)
		}
		b.consec++
		b.backoffLocked(now, o, retryAfter)
		if (probe || b.consec >= b.cfg.BreakerThreshold) && b.breaker != BreakerOpen {
			b.breaker = BreakerOpen
			b.breakerOpens.Add(1)
			b.log.Warn("circuit breaker open: apiserver keeps failing", "consecutive_failures", b.consec, "last", o.String(), "until", b.until)
			b.notifyLocked()
		}
	}
}

// backoffLocked extends the backoff deadline by the next jittered
// exponential interval, never shorter than retryAfter. A deadline is only
// ever extended: a concurrent success must not cut a server's Retry-After.
func (b *Budget) backoffLocked(now time.Time, o outcome, retryAfter time.Duration) {
	d := b.bo.NextBackOff()
	if retryAfter > b.cfg.MaxRetryAfter {
		retryAfter = b.cfg.MaxRetryAfter
	}
	if retryAfter > 0 {
		b.retryAfterLast = retryAfter
	}
	if d < retryAfter {
		d = retryAfter
	}
	until := now.Add(d)
	if !until.After(b.until) {
		return
	}
	if !now.Before(b.until) {
		b.backoffs.Add(1)
		b.log.Info("backing off", "cause", o.String(), "for", d, "retry_after", retryAfter)
	}
	b.until = until
	b.lastCause = o
	b.notifyLocked()
}

// setKilled turns the kill switch on or off. On: open watches are closed.
// Off: traffic resumes after a jitter within the spread window.
func (b *Budget) setKilled(on bool) {
	b.mu.Lock()
	if b.killed == on {
		b.mu.Unlock()
		return
	}
	b.killed = on
	b.killFlips.Add(1)
	var closing []*watchBody
	if on {
		for w := range b.watches {
			closing = append(closing, w)
		}
		b.log.Warn("kill switch on: no apiserver requests; closing open watches", "path", b.cfg.KillSwitchPath, "watches", len(closing))
	} else {
		jitter := b.respreadLocked(b.clock.Now())
		b.log.Info("kill switch off: resuming apiserver requests with jitter", "path", b.cfg.KillSwitchPath, "jitter", jitter)
	}
	b.notifyLocked()
	b.mu.Unlock()
	for _, w := range closing {
		w.kill()
		b.watchesKilled.Add(1)
	}
}

// observeLatency updates the moving average and says whether d counts as
// rising latency.
func (b *Budget) observeLatency(d time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	base := b.latencyEW
	if base == 0 {
		b.latencyEW = d
	} else {
		b.latencyEW = time.Duration(0.8*float64(base) + 0.2*float64(d))
	}
	return base > 0 && d > b.cfg.LatencyFloor && float64(d) > b.cfg.LatencyFactor*float64(base)
}

// setFleetSize changes this node's share of the fleet budget.
func (b *Budget) setFleetSize(n int) {
	if n < 1 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n == b.fleetSize {
		return
	}
	old := b.fleetSize
	b.fleetSize = n
	b.lim.SetLimitAt(b.clock.Now(), rate.Limit(b.rateLocked()))
	b.log.Info("fleet size changed", "from", old, "to", n, "rate", b.rateLocked())
	b.notifyLocked() // waiting requests re-reserve at the new rate
}

// Degraded reports whether requests are currently held back, and why:
// kill switch on, breaker open or half-open, or backing off.
func (b *Budget) Degraded() (bool, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	switch {
	case b.killed:
		return true, fmt.Sprintf("kill switch is on (%s): no apiserver requests", b.cfg.KillSwitchPath)
	case b.breaker == BreakerOpen:
		return true, fmt.Sprintf("circuit breaker open after %d consecutive failures (last: %s) until %s", b.consec, b.lastCause, b.until.Format(time.RFC3339))
	case b.breaker == BreakerHalfOpen:
		return true, fmt.Sprintf("circuit breaker half-open after %d consecutive failures (last: %s): probing", b.consec, b.lastCause)
	case now.Before(b.until):
		return true, fmt.Sprintf("backing off after %s until %s", b.lastCause, b.until.Format(time.RFC3339))
	}
	return false, ""
}

// Stats is a snapshot of a Budget's state and counters.
type Stats struct {
	Rate      float64 // this node's requests per second
	FleetSize int
	Burst     int
	// Requests counts requests sent, by "verb code" (e.g. "list 200",
	// "watch 429", "get error").
	Requests     map[string]int64
	TokensWaited int64 // requests that had to wait for a token
	// PaidInClientGo and PaidInTransport count tokens taken by client-go's
	// RateLimiter.Wait and by the transport (watches' first attempts and
	// requests that bypass client-go's limiter). Their sum is the tokens
	// spent; each request pays in exactly one place.
	PaidInClientGo, PaidInTransport int64
	WaitTime                        time.Duration
	Throttled                       int64 // 429 responses
	ServerErrors                    int64 // 5xx responses
	ConnErrors                      int64 // requests without a response
	Slow                            int64 // responses counted as rising latency
	Backoffs                        int64 // times the process entered backoff
	BackingOff                      bool
	BackoffUntil                    time.Time
	LastRetryAfter                  time.Duration
	Breaker                         BreakerState
	BreakerOpens                    int64
	ConsecutiveFailures             int
	Killed                          bool
	KillSwitchFlips                 int64
	WatchesOpen                     int
	WatchesKilled                   int64 // watches closed by the kill switch
	FleetSizeRefreshes              int64 // successful fleet-size reads
	FleetSizeErrors                 int64
}

// Stats returns a snapshot.
func (b *Budget) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	reqs := make(map[string]int64, len(b.reqs))
	for k, v := range b.reqs {
		reqs[k.verb+" "+k.code] = v
	}
	return Stats{
		Rate:                b.rateLocked(),
		FleetSize:           b.fleetSize,
		Burst:               b.cfg.Burst,
		Requests:            reqs,
		TokensWaited:        b.tokensWaited.Load(),
		PaidInClientGo:      b.paidClientGo.Load(),
		PaidInTransport:     b.paidTransport.Load(),
		WaitTime:            time.Duration(b.waitNanos.Load()),
		Throttled:           b.throttled.Load(),
		ServerErrors:        b.serverErrors.Load(),
		ConnErrors:          b.connErrors.Load(),
		Slow:                b.slow.Load(),
		Backoffs:            b.backoffs.Load(),
		BackingOff:          b.clock.Now().Before(b.until),
		BackoffUntil:        b.until,
		LastRetryAfter:      b.retryAfterLast,
		Breaker:             b.breaker,
		BreakerOpens:        b.breakerOpens.Load(),
		ConsecutiveFailures: b.consec,
		Killed:              b.killed,
		KillSwitchFlips:     b.killFlips.Load(),
		WatchesOpen:         len(b.watches),
		WatchesKilled:       b.watchesKilled.Load(),
		FleetSizeRefreshes:  b.fleetRefreshes.Load(),
		FleetSizeErrors:     b.fleetRefreshErr.Load(),
	}
}

// Start starts the kill-switch watcher (after reading the switch once, so
// that a switch already on holds the very first request) and, when the
// fleet size is discovered, the fleet-size refresher. It returns at once.
// Discovery needs a rest.Config: call Instrument before Start.
func (b *Budget) Start(ctx context.Context) error {
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	if b.started {
		return errors.New("limiter: Start called twice: start a Budget once")
	}
	if b.shutdown {
		return errors.New("limiter: Start after Shutdown: create a new Budget")
	}
	b.mu.Lock()
	discover := b.discover
	b.mu.Unlock()
	if b.cfg.FleetSize == 0 && discover == nil {
		return errors.New("limiter: fleet size is discovered but no rest.Config was instrumented: call Instrument(restConfig) before Start, or set a fixed fleet size")
	}
	b.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	if b.cfg.KillSwitchPath != "" {
		b.pollKillSwitch()
		b.done.Add(1)
		go func() {
			defer b.done.Done()
			b.runKillSwitch(runCtx)
		}()
	}
	if b.cfg.FleetSize == 0 {
		client, err := newDaemonSetClient(discover)
		if err != nil {
			cancel()
			b.done.Wait()
			b.started = false
			return err
		}
		b.done.Add(1)
		go func() {
			defer b.done.Done()
			b.runFleetSize(runCtx, client)
		}()
	}
	return nil
}

// Shutdown stops the background work Start began and waits for it, or
// returns ctx's error when ctx ends first. It is idempotent and safe
// without Start. Requests are not blocked by Shutdown; the agent stops its
// clients first.
func (b *Budget) Shutdown(ctx context.Context) error {
	b.lifeMu.Lock()
	b.shutdown = true
	cancel := b.cancel
	b.lifeMu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	done := make(chan struct{})
	go func() {
		b.done.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("limiter: shutdown: background work did not stop: %w", ctx.Err())
	}
}

// WaitFleetSize returns once the fleet size has been read from the
// DaemonSet (or the read has failed) at least once, or when ctx ends. With
// a fixed FleetSize it returns at once. Callers that start many requests
// together call it first, so that the discovery GET pays the first, spread
// token and their requests then run at the real per-node rate rather than
// queuing at the rate of the assumed, larger fleet.
func (b *Budget) WaitFleetSize(ctx context.Context) error {
	if b.cfg.FleetSize > 0 {
		return nil
	}
	t := b.clock.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for b.fleetRefreshes.Load() == 0 && b.fleetRefreshErr.Load() == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C():
		}
	}
	return nil
}
