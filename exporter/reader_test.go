package exporter

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// recordingExporter keeps, of each export, the gauge's value and the
// address of its data point array; block makes Export wait for its
// context.
type recordingExporter struct {
	mu       sync.Mutex
	values   []int64
	arrays   []*metricdata.DataPoint[int64]
	flushes  int
	shutdown int
	block    bool
}

func (e *recordingExporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}

func (e *recordingExporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

func (e *recordingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	e.mu.Lock()
	block := e.block
	e.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && len(g.DataPoints) == 1 {
				e.values = append(e.values, g.DataPoints[0].Value)
				e.arrays = append(e.arrays, &g.DataPoints[0])
			}
		}
	}
	return nil
}

func (e *recordingExporter) ForceFlush(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.flushes++
	return nil
}

func (e *recordingExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.shutdown++
	return nil
}

func (e *recordingExporter) exports() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.values)
}

// TestReaderAsPeriodicReader: the reader does what the SDK's PeriodicReader
// did for the agent. It exports at the interval OTEL_METRIC_EXPORT_INTERVAL
// gives when the config sets none; ForceFlush exports now and flushes the
// exporter; every export carries that collection's values, in the data
// points of the last collection (kept, not made anew); a collect-and-export
// ends at OTEL_METRIC_EXPORT_TIMEOUT; Shutdown exports a last time and
// shuts the exporter down once, and afterwards ForceFlush and Shutdown say
// the reader is shut down.
func TestReaderAsPeriodicReader(t *testing.T) {
	ctx := context.Background()
	var value atomic.Int64
	start := func(t *testing.T, r *reader) *sdkmetric.MeterProvider {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
		if _, err := mp.Meter("t").Int64ObservableGauge("g", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(value.Load())
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		return mp
	}
	t.Run("interval", func(t *testing.T) {
		exp := &recordingExporter{}
		env := map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "20", "OTEL_METRIC_EXPORT_TIMEOUT": "200"}
		r := newReader(exp, 0, 0, func(k string) string { return env[k] })
		if r.interval != 20*time.Millisecond || r.timeout != 200*time.Millisecond {
			t.Fatalf("interval %v, timeout %v; want 20ms and 200ms from the environment", r.interval, r.timeout)
		}
		mp := start(t, r)
		defer mp.Shutdown(ctx)
		deadline := time.Now().Add(30 * time.Second)
		for exp.exports() < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("%d exports in 30s at a 20ms interval", exp.exports())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("unusable environment", func(t *testing.T) {
		for _, v := range []string{"10000000000000", "-5", "30s"} {
			r := newReader(&recordingExporter{}, 0, 0, func(string) string { return v })
			if r.interval != 60*time.Second || r.timeout != 30*time.Second {
				t.Errorf("with %q: interval %v, timeout %v; want the defaults 60s and 30s", v, r.interval, r.timeout)
			}
			if err := r.Shutdown(ctx); err != nil {
				t.Errorf("shutting down a reader no provider registered: %v", err)
			}
		}
	})
	t.Run("flush, timeout and shutdown", func(t *testing.T) {
		exp := &recordingExporter{}
		r := newReader(exp, time.Hour, 200*time.Millisecond, func(string) string { return "" })
		mp := start(t, r)
		for _, v := range []int64{7, 8} {
			value.Store(v)
			if err := r.ForceFlush(ctx); err != nil {
				t.Fatal(err)
			}
			exp.mu.Lock()
			got, flushes := exp.values[len(exp.values)-1], exp.flushes
			exp.mu.Unlock()
			if got != v || flushes == 0 {
				t.Errorf("ForceFlush exported %d (want %d), exporter flushed %d times", got, v, flushes)
			}
		}
		exp.mu.Lock()
		if exp.arrays[1] != exp.arrays[0] {
			t.Errorf("the second export carried a new data point array; want the first collection's kept")
		}
		exp.block = true
		exp.mu.Unlock()
		if err := r.ForceFlush(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("ForceFlush of an export that never ends returned %v; want the 200ms timeout", err)
		}
		exp.mu.Lock()
		exp.block = false
		exp.mu.Unlock()
		value.Store(9)
		if err := mp.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		exp.mu.Lock()
		values, shutdowns := slices.Clone(exp.values), exp.shutdown
		exp.mu.Unlock()
		if !slices.Equal(values, []int64{7, 8, 9}) || shutdowns != 1 {
			t.Errorf("exports %v, exporter shut down %d times; want 7, 8 (flushes) and 9 (shutdown), once", values, shutdowns)
		}
		if err := r.ForceFlush(ctx); !errors.Is(err, sdkmetric.ErrReaderShutdown) {
			t.Errorf("ForceFlush after Shutdown returned %v; want ErrReaderShutdown", err)
		}
		if err := r.Shutdown(ctx); !errors.Is(err, sdkmetric.ErrReaderShutdown) {
			t.Errorf("a second Shutdown returned %v; want ErrReaderShutdown", err)
		}
	})
}
