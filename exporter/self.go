package exporter

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// selfProducer hands the agent's own metrics (the self MeterProvider, read
// through a ManualReader) to the product reader as an external
// Producer, so that they are collected at each product collection and go
// out in the same export request. It remembers the scope names it produced:
// the splitter puts those scopes on the agent's resource.
type selfProducer struct {
	r   *sdkmetric.ManualReader
	log *slog.Logger

	mu      sync.Mutex
	scopes  map[string]bool
	failing bool
}

// Produce collects the self-metrics. A failing callback costs only its own
// series: the error is logged (once per change) and not returned, because
// the SDK skips the whole export, product metrics included, when a
// Producer fails.
//
// It collects into a new ResourceMetrics every time, on purpose: the
// product reader appends the ScopeMetrics returned here to the collection
// it keeps, and at its next collection it may write product metrics into
// those ScopeMetrics' arrays. Arrays kept here would then carry product
// data into the next self-metrics collection.
func (p *selfProducer) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	var rm metricdata.ResourceMetrics
	err := p.r.Collect(ctx, &rm)
	if errors.Is(err, sdkmetric.ErrReaderShutdown) {
		return nil, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if (err != nil) != p.failing {
		p.failing = err != nil
		if err != nil {
			p.log.Warn("collecting the agent's own metrics failed; exporting what was collected", "err", err)
		}
	}
	if p.scopes == nil {
		p.scopes = map[string]bool{}
	}
	for _, sm := range rm.ScopeMetrics {
		p.scopes[sm.Scope.Name] = true
	}
	return rm.ScopeMetrics, nil
}

// isSelf reports whether scope is one of the self-metrics' scopes.
func (p *selfProducer) isSelf(scope string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.scopes[scope]
}
