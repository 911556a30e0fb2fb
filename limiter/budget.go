package limiter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// Budget is one process's apiserver request budget. Its methods are safe
// for concurrent use.
//
// It is made of parts that each do one job: the gate (kill switch,
// backoff, breaker) and the bucket (the token bucket and its spread and
// respread), which change together under mu; the latency average, the open
// watches and the counters, each with its own synchronisation.
type Budget struct {
	cfg   Config
	clock clock.WithTicker
	log   *slog.Logger

	mu       sync.Mutex
	gate     gate
	bucket   bucket
	changed  chan struct{} // closed and replaced on every gate or bucket change
	discover *rest.Config  // the first instrumented config, for fleet-size discovery
	killErr  string        // last kill-switch read error, to log each once
	source   string        // where the fleet size came from (Source*)

	sizeKnown     chan struct{} // closed once the fleet size is known (WaitFleetSize)
	sizeKnownOnce sync.Once

	latency  latencyAverage
	watches  watchRegistry
	requests requestCounts
	counts   counters
	held     atomic.Int64 // requests waiting at the gate now

	lifeMu   sync.Mutex
	started  bool
	shutdown bool
	cancel   context.CancelFunc
	done     sync.WaitGroup
}

// New returns a Budget for cfg, or every problem Validate finds. The
// budget's first token arrives at a uniformly random point in the window
// 1/rate after its first request (the start-up spread), so agents started
// together spend the fleet budget evenly instead of all at once.
func New(cfg Config) (*Budget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	size, source := cfg.FleetSize, SourceFixed
	if size == 0 {
		size, source = cfg.AssumedFleetSize, SourceAssumed
	}
	b := &Budget{
		cfg:       cfg,
		clock:     cfg.Clock,
		log:       cfg.Logger.With("component", "limiter"),
		changed:   make(chan struct{}),
		gate:      newGate(cfg),
		bucket:    newBucket(cfg.FleetQPS, size, cfg.Burst, cfg.Rand, cfg.Clock.Now()),
		latency:   latencyAverage{factor: cfg.LatencyFactor, floor: cfg.LatencyFloor},
		source:    source,
		sizeKnown: make(chan struct{}),
	}
	if cfg.FleetSize > 0 {
		b.markSizeKnown()
		b.warnTokenIntervalLocked()
	}
	return b, nil
}

// warnTokenIntervalLocked logs when this agent's share of the fleet budget
// leaves more than MaxTokenInterval between its tokens: its informers'
// watches may then fail and relist. The assumed fleet size is not
// checked: it paces only the fleet-size read, before any informer starts.
func (b *Budget) warnTokenIntervalLocked() {
	if b.source == SourceAssumed || b.cfg.NoWatches {
		return
	}
	if w := b.bucket.window(); w > MaxTokenInterval {
		b.log.Warn("fleet budget too small for this fleet: an informer's watch may follow its list by more than the apiserver's watch history (75 s) and fail with \"too old resource version\"; raise fleet-qps",
			"fleet_qps", b.cfg.FleetQPS, "fleet_size", b.bucket.size, "source", b.source,
			"token_interval", w.Round(time.Second), "max_token_interval", MaxTokenInterval, "min_fleet_qps", math.Ceil(MinFleetQPS(b.bucket.size)))
	}
}

// markSizeKnown releases WaitFleetSize.
func (b *Budget) markSizeKnown() { b.sizeKnownOnce.Do(func() { close(b.sizeKnown) }) }

// notifyLocked wakes every request waiting at the gate or for a token.
func (b *Budget) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// checkLocked asks the gate, logging and announcing what the check changed.
func (b *Budget) checkLocked(now time.Time, take bool) (reason string, until time.Time, probe bool) {
	reason, until, probe, c := b.gate.check(now, take)
	b.applyLocked(now, c)
	return reason, until, probe
}

// applyLocked logs and counts a gate change, respreads the bucket when the
// breaker closes, and wakes the waiting requests.
func (b *Budget) applyLocked(now time.Time, c gateChange) {
	if c.halfOpened {
		b.log.Info("circuit breaker half-open: letting one probe through")
	}
	if c.backoffStarted {
		b.counts.backoffs.Add(1)
		b.log.Info("backing off", "cause", b.gate.cause(), "for", c.backoff, "retry_after", b.gate.retryAfter)
	}
	if c.breakerOpened {
		b.counts.breakerOpens.Add(1)
		b.log.Warn("circuit breaker open: apiserver keeps failing", "consecutive_failures", b.gate.consec, "last", b.gate.cause(), "until", b.gate.until)
	}
	if c.breakerClosed {
		b.log.Info("circuit breaker closed: apiserver answered")
	}
	if c.changed {
		b.notifyLocked()
	}
}

// resumeLocked is called with the gate open, before a request takes a
// token. It applies the start-up spread to the first request, and
// respreads the bucket for the first request after each time the gate
// held requests (kill switch, backoff, breaker): every agent may resume at
// the same instant (an apiserver restart breaks every connection at once),
// and none must come back with a full bucket.
func (b *Budget) resumeLocked(now time.Time) {
	if b.bucket.spreadPending {
		b.bucket.heldAt = b.gate.holds
		b.bucket.spreadOnce(now)
		return
	}
	if b.bucket.heldAt == b.gate.holds {
		return
	}
	b.bucket.heldAt = b.gate.holds
	next := b.bucket.respread(now)
	b.log.Debug("requests resume after the gate held them; next token at a random point of the spread window", "in", next)
	b.notifyLocked() // requests waiting for a token of the old bucket re-reserve
}

// acquire blocks until a request may be sent: the gate is open (kill switch
// off, no backoff, breaker not open) and a token is paid, either from the
// bucket or from a credit that client-go's Wait already paid.
//
// Without transport (client-go's Wait) the paid token is left as a credit
// and acquire returns. With transport, the final pass also takes the
// half-open probe slot, counts the request as paid in client-go or in the
// transport, and registers w (a watch's body, or nil) under the same lock
// as the gate check, so that the kill switch either holds the request here
// or finds the watch registered and ends it.
//
// A payment belongs to the bucket it was paid from: a respread (traffic
// resuming after a hold) refunds the tokens paid for requests not yet sent
// and makes them pay again from the respread bucket, so that they go out
// on the agent's grid like every other request, and each request sent is
// paid exactly once.
func (b *Budget) acquire(ctx context.Context, transport bool, w *watchBody) (probe bool, err error) {
	start := b.clock.Now()
	defer func() { b.counts.waitNanos.Add(int64(b.clock.Since(start))) }()
	paid, fromWait := false, false
	var epoch uint64 // the bucket's respread count when the token was paid
	defer func() {
		if err != nil && paid {
			b.mu.Lock()
			if epoch == b.bucket.resumes {
				b.bucket.unsent-- // given up: the token is spent
			}
			b.mu.Unlock()
		}
	}()
	for {
		b.mu.Lock()
		now := b.clock.Now()
		reason, until, _ := b.checkLocked(now, false)
		if reason == "" {
			b.resumeLocked(now)
			if paid && epoch != b.bucket.resumes {
				paid = false // refunded by a respread: pay again
			}
			if !paid && transport && b.bucket.credits > 0 {
				b.bucket.credits--
				paid, fromWait, epoch = true, true, b.bucket.resumes
			}
			if paid && !transport {
				b.bucket.credits++
				b.mu.Unlock()
				return false, nil
			}
			if paid {
				reason, until, probe = b.checkLocked(now, true)
				if reason == "" {
					b.bucket.unsent--
					if fromWait {
						b.counts.paidClientGo.Add(1)
					} else {
						b.counts.paidTransport.Add(1)
					}
					if w != nil {
						b.watches.add(w)
					}
					b.mu.Unlock()
					return probe, nil
				}
			} else {
				lim, ch, ep := b.bucket.lim, b.changed, b.bucket.resumes
				b.mu.Unlock()
				ok, err := b.payToken(ctx, lim, ch)
				if err != nil {
					return false, err
				}
				if ok {
					b.mu.Lock()
					// A token of a bucket a respread has replaced is void.
					if ep == b.bucket.resumes {
						paid, fromWait, epoch = true, false, ep
						b.bucket.unsent++
					}
					b.mu.Unlock()
				}
				continue // the gate may have closed while waiting for the token
			}
		}
		ch := b.changed
		b.mu.Unlock()
		b.held.Add(1)
		err := b.waitUntil(ctx, ch, now, until)
		b.held.Add(-1)
		if err != nil {
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
		b.counts.tokensWaited.Add(1)
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
	b.observeClass(now, o, connNone, retryAfter, probe)
}

// observeClass is observe with the class of a connection error.
func (b *Budget) observeClass(now time.Time, o outcome, class connClass, retryAfter time.Duration, probe bool) {
	b.counts.countOutcome(o, class)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applyLocked(now, b.gate.observe(now, o, class, retryAfter, probe))
}

// setKilled turns the kill switch on or off. On: open watches are closed.
// Off: traffic resumes after a jitter within the spread window.
func (b *Budget) setKilled(on bool) {
	b.mu.Lock()
	if !b.gate.setKilled(on) {
		b.mu.Unlock()
		return
	}
	b.counts.killFlips.Add(1)
	var closing []*watchBody
	if on {
		closing = b.watches.all()
		b.log.Warn("kill switch on: no apiserver requests; closing open watches", "path", b.cfg.KillSwitchPath, "watches", len(closing))
	} else {
		b.log.Info("kill switch off: apiserver requests resume, spread over the window", "path", b.cfg.KillSwitchPath)
	}
	b.notifyLocked()
	b.mu.Unlock()
	for _, w := range closing {
		w.kill()
		b.counts.watchesKilled.Add(1)
	}
}

// setFleetSize changes this node's share of the fleet budget; source says
// where n comes from.
func (b *Budget) setFleetSize(n int, source string) {
	if n < 1 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	wasAssumed := b.source == SourceAssumed
	b.source = source
	old := b.bucket.size
	changed := b.bucket.setSize(b.clock.Now(), n)
	if changed || wasAssumed {
		b.warnTokenIntervalLocked() // also when the assumed size was right
	}
	if !changed {
		return
	}
	b.log.Info("fleet size changed", "from", old, "to", n, "source", source, "rate", b.bucket.rate())
	b.notifyLocked() // waiting requests re-reserve at the new rate
}

// Degraded reports whether requests are currently held back, and why:
// kill switch on (or unreadable, which counts as on), breaker open or
// half-open, or backing off.
func (b *Budget) Degraded() (bool, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gate.killed && b.killErr != "" {
		return true, fmt.Sprintf("kill switch %s cannot be read (%s): treated as on, no apiserver requests; %s",
			b.cfg.KillSwitchPath, b.killErr, killSwitchFix)
	}
	return b.gate.degraded(b.clock.Now(), b.cfg.KillSwitchPath)
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
		if b.applyHint() {
			b.markSizeKnown()
		}
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

// WaitFleetSize returns once this budget's rate comes from a known fleet
// size, or when ctx ends: at once with a fixed FleetSize, or once Start has
// read a fleet-size hint; otherwise once the DaemonSet has been read (or
// the read has failed) for the first time. Callers that start many
// requests together call it first, so that without a hint the discovery
// GET pays the first, spread token and their requests then run at the
// real per-node rate rather than queuing at the rate of the assumed fleet.
func (b *Budget) WaitFleetSize(ctx context.Context) error {
	select {
	case <-b.sizeKnown: // known wins over a ctx that has ended too
		return nil
	default:
	}
	select {
	case <-b.sizeKnown:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
