package exporter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// reader collects and exports at an interval, as the SDK's PeriodicReader
// does (same defaults, environment variables, timeout, ForceFlush and
// Shutdown), through a ManualReader into one ResourceMetrics it keeps from
// one collection to the next. The PeriodicReader hands every collection a
// zeroed ResourceMetrics (its TODO #3047), so the SDK's aggregations made
// their data point slices anew each interval: a tenth of what an interval
// allocated (BenchmarkIntervalAllocs). Given the last collection's
// ResourceMetrics they reuse them. Nothing may hold the ResourceMetrics, or
// the protobuf messages made of it, after Export returns: the OTLP
// exporters' messages share its histogram bucket counts, and no message
// outlives the export (the splitter's parts of a failed request are
// replaced by the next request's, never sent). The
// agent has one product scope; with several, the SDK orders them afresh at
// each collection, a slot may then hold another scope's metric, and its
// slices are made anew at the larger size (kept: a one-time step of the
// live heap, about 120 KB in TestMemoryBoundedWhileDown, which registers
// its self-metrics as a second product scope).
type reader struct {
	*sdkmetric.ManualReader
	exp      sdkmetric.Exporter
	interval time.Duration
	timeout  time.Duration

	// rm is the collection kept for the next; only the run goroutine
	// touches it until done is closed, then only Shutdown.
	rm      metricdata.ResourceMetrics
	flushCh chan chan error
	stop    context.CancelFunc
	done    chan struct{}

	shutdownOnce sync.Once
}

// newReader returns a running reader of exp. interval and timeout, when 0,
// come from OTEL_METRIC_EXPORT_INTERVAL and OTEL_METRIC_EXPORT_TIMEOUT
// (milliseconds), else 60s and 30s, as for the PeriodicReader.
func newReader(exp sdkmetric.Exporter, interval, timeout time.Duration, getenv func(string) string, producers ...sdkmetric.Producer) *reader {
	opts := []sdkmetric.ManualReaderOption{sdkmetric.WithTemporalitySelector(exp.Temporality),
		sdkmetric.WithAggregationSelector(exp.Aggregation)}
	for _, p := range producers {
		opts = append(opts, sdkmetric.WithProducer(p))
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &reader{
		ManualReader: sdkmetric.NewManualReader(opts...),
		exp:          exp,
		interval:     envDuration(interval, getenv, "OTEL_METRIC_EXPORT_INTERVAL", 60*time.Second),
		timeout:      envDuration(timeout, getenv, "OTEL_METRIC_EXPORT_TIMEOUT", 30*time.Second),
		flushCh:      make(chan chan error),
		stop:         stop,
		done:         make(chan struct{}),
	}
	go r.run(ctx)
	return r
}

// envDuration is d, else the positive whole number of milliseconds in the
// variable, else def. An unusable value (not a number, not positive, or
// too large for a duration) is reported to the OpenTelemetry error handler
// and def used, as the SDK does.
func envDuration(d time.Duration, getenv func(string) string, name string, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	v := getenv(name)
	if v == "" {
		return def
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		otel.Handle(fmt.Errorf("%s=%q is not a positive whole number of milliseconds that fits a duration: using %v", name, v, def))
		return def
	}
	return time.Duration(ms) * time.Millisecond
}

func (r *reader) run(ctx context.Context) {
	defer close(r.done)
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			if err := r.collectAndExport(ctx); err != nil {
				otel.Handle(err)
			}
		case errCh := <-r.flushCh:
			errCh <- r.collectAndExport(ctx)
			ticker.Reset(r.interval)
		case <-ctx.Done():
			return
		}
	}
}

// collectAndExport is export within the timeout.
func (r *reader) collectAndExport(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, r.timeout, errors.New("reader collect and export timeout"))
	defer cancel()
	return r.export(ctx)
}

// export collects into r.rm and exports it.
func (r *reader) export(ctx context.Context) error {
	err := r.Collect(ctx, &r.rm)
	if err == nil {
		err = r.exp.Export(ctx, &r.rm)
	}
	return err
}

// ForceFlush collects and exports now, then flushes the exporter.
func (r *reader) ForceFlush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, r.timeout, errors.New("reader force flush timeout"))
		defer cancel()
	}
	errCh := make(chan error, 1)
	select {
	case r.flushCh <- errCh:
		select {
		case err := <-errCh:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	case <-r.done:
		return sdkmetric.ErrReaderShutdown
	case <-ctx.Done():
		return ctx.Err()
	}
	return r.exp.ForceFlush(ctx)
}

// Shutdown stops the interval, collects and exports a last time, and shuts
// the exporter and the ManualReader down. Later calls return
// ErrReaderShutdown.
func (r *reader) Shutdown(ctx context.Context) error {
	err := sdkmetric.ErrReaderShutdown
	r.shutdownOnce.Do(func() {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeoutCause(ctx, r.timeout, errors.New("reader shutdown timeout"))
			defer cancel()
		}
		r.stop()
		<-r.done
		if err = r.export(ctx); errors.Is(err, sdkmetric.ErrReaderNotRegistered) {
			err = nil // no provider: nothing to export
		}
		r.rm = metricdata.ResourceMetrics{}
		if sErr := r.exp.Shutdown(ctx); err == nil {
			err = sErr
		}
		if mErr := r.ManualReader.Shutdown(ctx); err == nil && !errors.Is(mErr, sdkmetric.ErrReaderShutdown) {
			err = mErr
		}
	})
	return err
}
