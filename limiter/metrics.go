package limiter

import (
	"context"
	"fmt"

	"github.com/fleetagent/fleetagent/internal/selfmetrics"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers the fleetagent.limiter.* self-metrics of
// selfmetrics.Table, read from the budget's own counters at collection time.
func (b *Budget) RegisterMetrics(m metric.Meter) error {
	set := selfmetrics.NewSet(m)
	requests := set.Int64("fleetagent.limiter.requests")
	waited := set.Int64("fleetagent.limiter.tokens.waited")
	waitTime := set.Float64("fleetagent.limiter.wait.time")
	rate := set.Float64("fleetagent.limiter.rate")
	fleet := set.Int64("fleetagent.limiter.fleet.size")
	backoffs := set.Int64("fleetagent.limiter.backoffs")
	connErrs := set.Int64("fleetagent.limiter.connection.errors")
	backoffActive := set.Int64("fleetagent.limiter.backoff.active")
	breaker := set.Int64("fleetagent.limiter.breaker.state")
	opens := set.Int64("fleetagent.limiter.breaker.opens")
	killed := set.Int64("fleetagent.limiter.killswitch.active")
	unreadable := set.Int64("fleetagent.limiter.killswitch.unreadable")
	watches := set.Int64("fleetagent.limiter.watches.open")
	err := set.Register(func(_ context.Context, o metric.Observer) error {
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
	})
	if err != nil {
		return fmt.Errorf("limiter: %w", err)
	}
	return nil
}

func b2i(v bool) int64 {
	if v {
		return 1
	}
	return 0
}
