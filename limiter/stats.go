package limiter

import (
	"sync"
	"sync/atomic"
	"time"
)

// counters are the budget's monotonic counts, read by Stats and the
// self-metrics without taking the budget's lock.
type counters struct {
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
	connByClass     [numConnClasses]atomic.Int64
}

// countOutcome counts a response (or failure) by what it says about the
// apiserver.
func (c *counters) countOutcome(o outcome, class connClass) {
	switch o {
	case outcomeThrottled:
		c.throttled.Add(1)
	case outcomeServer:
		c.serverErrors.Add(1)
	case outcomeConn:
		c.connErrors.Add(1)
		c.connByClass[class].Add(1)
	case outcomeSlow:
		c.slow.Add(1)
	}
}

type verbCode struct{ verb, code string }

// requestCounts counts requests sent, by verb and response code.
type requestCounts struct {
	mu sync.Mutex
	n  map[verbCode]int64
}

func (r *requestCounts) add(verb, code string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[verbCode]int64{}
	}
	r.n[verbCode{verb, code}]++
}

func (r *requestCounts) each(f func(verb, code string, n int64)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.n {
		f(k.verb, k.code, v)
	}
}

// Stats is a snapshot of a Budget's state and counters.
type Stats struct {
	Rate      float64 // this node's requests per second
	FleetSize int
	// FleetSizeSource says where FleetSize comes from: SourceFixed,
	// SourceHint, SourceAssumed or SourceDaemonSet.
	FleetSizeSource string
	Burst           int
	// Requests counts requests sent, by "verb code" (e.g. "list 200",
	// "watch 429", "get error").
	Requests     map[string]int64
	TokensWaited int64 // requests that had to wait for a token
	// PaidInClientGo and PaidInTransport count the requests sent, by
	// where their token was paid: in client-go's RateLimiter.Wait, or in
	// the transport (watches' first attempts, requests that bypass
	// client-go's limiter, and requests whose token a respread refunded
	// because the gate held them after they paid). Each request sent is
	// paid exactly once: their sum is the number of requests sent.
	PaidInClientGo, PaidInTransport int64
	WaitTime                        time.Duration
	Throttled                       int64 // 429 responses
	ServerErrors                    int64 // 5xx responses
	ConnErrors                      int64 // requests without a (complete) response
	// ConnErrorsByClass counts ConnErrors by cause: dial_timeout,
	// tls_handshake_timeout, response_header_timeout, connection_refused,
	// connection_reset, eof, timeout, other.
	ConnErrorsByClass   map[string]int64
	Slow                int64 // responses counted as rising latency
	Backoffs            int64 // times the process entered backoff
	BackingOff          bool
	BackoffUntil        time.Time
	LastRetryAfter      time.Duration
	Breaker             BreakerState
	BreakerOpens        int64
	ConsecutiveFailures int
	Killed              bool
	// KillSwitchError is why the kill switch could not be read, "" when
	// it could. An unreadable switch counts as on (Killed).
	KillSwitchError string
	KillSwitchFlips int64
	// HeldAtGate is the number of requests waiting now for the kill
	// switch, a backoff or the breaker.
	HeldAtGate         int
	WatchesOpen        int
	WatchesKilled      int64 // watches closed by the kill switch
	FleetSizeRefreshes int64 // successful fleet-size reads
	FleetSizeErrors    int64
}

// Stats returns a snapshot.
func (b *Budget) Stats() Stats {
	byClass := map[string]int64{}
	for c := connNone + 1; c < numConnClasses; c++ {
		byClass[c.String()] = b.counts.connByClass[c].Load()
	}
	reqs := map[string]int64{}
	b.requests.each(func(verb, code string, n int64) { reqs[verb+" "+code] = n })
	s := Stats{
		Requests:           reqs,
		TokensWaited:       b.counts.tokensWaited.Load(),
		PaidInClientGo:     b.counts.paidClientGo.Load(),
		PaidInTransport:    b.counts.paidTransport.Load(),
		WaitTime:           time.Duration(b.counts.waitNanos.Load()),
		Throttled:          b.counts.throttled.Load(),
		ServerErrors:       b.counts.serverErrors.Load(),
		ConnErrors:         b.counts.connErrors.Load(),
		ConnErrorsByClass:  byClass,
		Slow:               b.counts.slow.Load(),
		Backoffs:           b.counts.backoffs.Load(),
		BreakerOpens:       b.counts.breakerOpens.Load(),
		KillSwitchFlips:    b.counts.killFlips.Load(),
		WatchesOpen:        b.watches.len(),
		HeldAtGate:         int(b.held.Load()),
		WatchesKilled:      b.counts.watchesKilled.Load(),
		FleetSizeRefreshes: b.counts.fleetRefreshes.Load(),
		FleetSizeErrors:    b.counts.fleetRefreshErr.Load(),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s.Rate = b.bucket.rate()
	s.FleetSize = b.bucket.size
	s.FleetSizeSource = b.source
	s.Burst = b.bucket.burst
	s.BackingOff = b.gate.backingOff(b.clock.Now())
	s.BackoffUntil = b.gate.until
	s.LastRetryAfter = b.gate.retryAfter
	s.Breaker = b.gate.breaker
	s.ConsecutiveFailures = b.gate.consec
	s.Killed = b.gate.killed
	s.KillSwitchError = b.killErr
	return s
}
