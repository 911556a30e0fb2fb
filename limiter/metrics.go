package limiter

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers the budget's self-metrics on m as observable
// instruments read from the budget's own counters at collection time:
//
//	fleetagent.limiter.requests        {request}  by http.request.method-like verb and code
//	fleetagent.limiter.tokens.waited   {request}  requests that waited for a token
//	fleetagent.limiter.wait.time       s          time spent waiting (tokens, backoff, breaker, kill switch)
//	fleetagent.limiter.rate            {request}/s this node's share of the fleet budget
//	fleetagent.limiter.fleet.size      {agent}
//	fleetagent.limiter.backoffs        {request}  requests that met backpressure, by cause
//	fleetagent.limiter.connection.errors {request} requests without a (complete) response, by error.type
//	fleetagent.limiter.backoff.active  1 while backing off
//	fleetagent.limiter.breaker.state   0 closed, 1 half-open, 2 open
//	fleetagent.limiter.breaker.opens   {open}
//	fleetagent.limiter.killswitch.active 1 while the kill switch is on (or unreadable)
//	fleetagent.limiter.killswitch.unreadable 1 while the kill switch exists but cannot be read
//	fleetagent.limiter.watches.open    {watch}
func (b *Budget) RegisterMetrics(m metric.Meter) error {
	var errs []error
	i64c := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	i64g := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	requests := i64c("fleetagent.limiter.requests", "{request}", "Apiserver requests sent through the budget, by verb and response code (\"error\": no response).")
	waited := i64c("fleetagent.limiter.tokens.waited", "{request}", "Requests that had to wait for a token.")
	waitTime, err := m.Float64ObservableCounter("fleetagent.limiter.wait.time", metric.WithUnit("s"), metric.WithDescription("Time requests spent waiting for a token, a backoff, the breaker or the kill switch."))
	errs = append(errs, err)
	rate, err := m.Float64ObservableGauge("fleetagent.limiter.rate", metric.WithUnit("{request}/s"), metric.WithDescription("This node's share of the fleet request budget."))
	errs = append(errs, err)
	fleet := i64g("fleetagent.limiter.fleet.size", "{agent}", "Number of agents sharing the fleet budget.")
	backoffs := i64c("fleetagent.limiter.backoffs", "{request}", "Requests that met backpressure, by cause: throttled (429), server_error (5xx), connection_error (no response), slow (rising latency). Each one counts, whether it started a backoff or met one already running.")
	connErrs := i64c("fleetagent.limiter.connection.errors", "{request}", "Requests that got no (complete) response, by error.type: dial_timeout, tls_handshake_timeout, response_header_timeout, connection_refused, connection_reset, eof, timeout, other. All are backpressure.")
	backoffActive := i64g("fleetagent.limiter.backoff.active", "1", "1 while requests are held back by a backoff.")
	breaker := i64g("fleetagent.limiter.breaker.state", "1", "Circuit breaker state: 0 closed, 1 half-open, 2 open.")
	opens := i64c("fleetagent.limiter.breaker.opens", "{open}", "Times the circuit breaker opened.")
	killed := i64g("fleetagent.limiter.killswitch.active", "1", "1 while the kill switch stops all apiserver traffic (an unreadable switch counts as on).")
	unreadable := i64g("fleetagent.limiter.killswitch.unreadable", "1", "1 while the kill-switch path exists but cannot be read as a regular file; the switch then counts as on.")
	watches := i64g("fleetagent.limiter.watches.open", "{watch}", "Watches currently open through the budget.")
	for _, e := range errs {
		if e != nil {
			return fmt.Errorf("limiter: register metrics: %w", e)
		}
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := b.Stats()
		b.requests.each(func(verb, code string, n int64) {
			o.ObserveInt64(requests, n, metric.WithAttributes(attribute.String("verb", verb), attribute.String("code", code)))
		})
		o.ObserveInt64(waited, s.TokensWaited)
		o.ObserveFloat64(waitTime, s.WaitTime.Seconds())
		o.ObserveFloat64(rate, s.Rate)
		o.ObserveInt64(fleet, int64(s.FleetSize))
		for cause, v := range map[string]int64{"throttled": s.Throttled, "server_error": s.ServerErrors, "connection_error": s.ConnErrors, "slow": s.Slow} {
			o.ObserveInt64(backoffs, v, metric.WithAttributes(attribute.String("cause", cause)))
		}
		for class, v := range s.ConnErrorsByClass {
			o.ObserveInt64(connErrs, v, metric.WithAttributes(attribute.String("error.type", class)))
		}
		o.ObserveInt64(backoffActive, b2i(s.BackingOff))
		o.ObserveInt64(breaker, int64(s.Breaker))
		o.ObserveInt64(opens, s.BreakerOpens)
		o.ObserveInt64(killed, b2i(s.Killed))
		o.ObserveInt64(unreadable, b2i(s.KillSwitchError != ""))
		o.ObserveInt64(watches, int64(s.WatchesOpen))
		return nil
	}, requests, waited, waitTime, rate, fleet, backoffs, connErrs, backoffActive, breaker, opens, killed, unreadable, watches)
	if err != nil {
		return fmt.Errorf("limiter: register metrics callback: %w", err)
	}
	return nil
}

func b2i(v bool) int64 {
	if v {
		return 1
	}
	return 0
}
