// Package exporter builds the OpenTelemetry MeterProvider that exports the
// agent's metrics over OTLP.
//
// The exporter is otlpmetricgrpc by default and otlpmetrichttp
// (HTTP/protobuf) when OTEL_EXPORTER_OTLP_METRICS_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL says "http/protobuf". Endpoint, headers, TLS,
// insecure, compression, timeout and temporality come from the standard
// OTEL_EXPORTER_OTLP_* variables, which the exporters read themselves; the
// export interval and timeout from OTEL_METRIC_EXPORT_INTERVAL and
// OTEL_METRIC_EXPORT_TIMEOUT unless Config sets them; the resource from
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME plus k8s.node.name.
//
// # One resource per entity, one request per interval
//
// The product provider (Config.EntityKeys set) exports one OTLP Resource per
// node, pod, container and volume, all in the one export request of each
// interval. The SDK's exporters take one metricdata.ResourceMetrics per
// Export and send one request for it, and a MeterProvider has one resource;
// one provider or one Export per pod would be one request per pod (the
// gateway sees hundreds per node per interval) and one SDK pipeline per pod.
// So the collectors record on the points of one provider, and the request
// the SDK exporter has built is regrouped just before it goes out: a gRPC
// unary interceptor (otlpmetricgrpc.WithDialOption) or an HTTP RoundTripper
// (otlpmetrichttp.WithHTTPClient) moves the entity attributes of each point
// onto a Resource of its own (go.opentelemetry.io/proto/otlp types, already
// linked by the exporters). In the agent a point does not carry its
// entity's ten-odd attributes but one short entity handle
// (collector.WithEntityHandles, Config.EntityHandles), which the regrouping
// resolves to the entity's attributes, kept as protobuf from one request to
// the next: a point then carries one attribute instead of a dozen, and the
// request the same resources and series (TestEntityHandlesSameExport).
//
// The sums and gauges reach the regrouping already encoded. The SDK's
// exporters convert a collection to protobuf anew at every export, each
// point, attribute and value a new message (the Go SDK has no reusable-data
// mode, as OpenTelemetry Java's exporters have): half of what an interval
// allocated (BenchmarkIntervalAllocs). So an encoder between the reader and
// the SDK exporter writes them into messages it keeps from one export to
// the next, with the fields the SDK's transform gives them
// (TestEncoderAsTheSDKTransform), and hands the SDK exporter the rest: the
// resource and anything else (histograms, points with exemplars or with
// attributes of other types), which the SDK converts as before. Everything
// else stays the SDK's: aggregation, temporality, cardinality limits,
// OTEL_EXPORTER_OTLP_* handling, compression, retries and partial-success
// handling. The one thing the HTTP
// path reads itself is the TLS configuration (OTEL_EXPORTER_OTLP_CERTIFICATE,
// _CLIENT_CERTIFICATE, _CLIENT_KEY) and _TIMEOUT, which the HTTP exporter
// applies only to a client of its own (TestSplitHTTPOverTLS). The
// alternatives were worse: the Collector's pdata brings the Collector's
// module graph and its own exporter with its own configuration; an OTLP
// client of the agent's own would repeat the SDK exporters' configuration,
// retries and partial-success handling. The cost is a second pass over the
// request: on HTTP a decode of what the SDK encoded, regroup and re-encode
// (and gzip again) of the body, whose split a retry reuses; on gRPC a
// regroup of the message, kept across retries. The SDK's experimental
// self-observability of its exporter (OTEL_GO_X_OBSERVABILITY) counts only
// the points the SDK converted. Figures are in the README (BenchmarkCollectExport).
//
// Over gRPC, a request above 3 MiB goes out as a few requests of whole
// resources each under it, because gRPC servers (the Collector's OTLP
// receiver among them) refuse messages above 4 MiB by default, and one node
// at 250 pods of 10 containers needs about 4.7 MB; a retry resends only the
// parts not yet accepted (TestNothingLostAt250Pods, TestGRPCPartsRetriedOnce).
// HTTP requests are not split (the Collector accepts 20 MiB bodies by
// default).
//
// Product resources carry no service.* or telemetry.sdk.* attributes: those
// describe the agent. The agent's own metrics (Config.Self) travel in the
// same request, on one Resource of their own with service.name,
// service.instance.id (the node name: one agent per node), service.version
// and telemetry.sdk.*: they live on a second MeterProvider, read through a
// ManualReader that is an external Producer of the product reader,
// so each product collection collects them too and the splitter puts their
// scopes on the agent's resource. One request per node per interval, never
// a second stream at the same rate: a gateway in front of thousands of
// nodes pays per request, and the self-metrics are a small share of a
// node's thousands of points (TestSelfMetricsTravelInTheProductRequest). A slower cadence
// of their own was the alternative; it still doubles the requests of some
// intervals and needs a flag, while folding them in costs one more
// Resource in a request that already has hundreds. The Prometheus exporter
// of /metrics reads the same provider (Config.SelfReaders) and never sees
// the product metrics, so a scrape of /metrics does not scrape the kubelet.
//
// Memory stays bounded while the collector is down: the agent's instruments
// are asynchronous, so each export collects current state afresh and a failed
// export is dropped after its bounded retries rather than queued.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetagent/fleetagent/internal/selfmetrics"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// Protocols accepted in Config.Protocol and the OTEL_*_PROTOCOL variables.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Retry bounds the exporter's retries of one export. Retryable are gRPC
// UNAVAILABLE (also a refused connection), RESOURCE_EXHAUSTED when the server
// sends RetryInfo, and the other transient codes; HTTP 429, 502, 503 and 504.
// A server's RetryInfo / Retry-After is honoured. The retries of one export
// also end when the export timeout does.
type Retry struct {
	// Disabled turns retries off: a failed export is dropped at once.
	Disabled bool
	// InitialInterval is the first backoff (default 1s).
	InitialInterval time.Duration
	// MaxInterval caps the backoff (default 10s).
	MaxInterval time.Duration
	// MaxElapsedTime bounds all attempts of one export (default 20s).
	MaxElapsedTime time.Duration
}

// Config configures New. The zero value exports over gRPC as the environment
// says.
type Config struct {
	// Protocol is "grpc" or "http/protobuf"; empty means
	// OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL,
	// then "grpc".
	Protocol string
	// NodeName is the k8s.node.name resource attribute.
	NodeName string
	// ServiceName is the default service.name (default "fleetagent");
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it.
	ServiceName string
	// ServiceVersion is service.version when set.
	ServiceVersion string
	// Interval between exports; 0 means OTEL_METRIC_EXPORT_INTERVAL or 60s.
	Interval time.Duration
	// Timeout of one collect-and-export including retries; 0 means
	// OTEL_METRIC_EXPORT_TIMEOUT or 30s.
	Timeout time.Duration
	// Retry bounds retries of one export.
	Retry Retry
	// Readers are added to the MeterProvider besides the OTLP one (the
	// agent adds none: its /metrics reads the self-metrics, SelfReaders).
	// Not with EntityHandles: such a reader would see handles instead of
	// entity attributes, and each of its reads would age the registry.
	Readers []sdkmetric.Reader
	// OnExport, when set, is called after every export attempt with its
	// result (nil on success). It must not block.
	OnExport func(error)
	// Logger logs export state changes (default slog.Default()).
	Logger *slog.Logger
	// Getenv reads the protocol variables (default os.Getenv).
	Getenv func(string) string
	// EntityKeys, when set, marks the data-point attribute keys that
	// identify an entity (collector.IsResourceAttribute): each export
	// request then carries one Resource per entity (see the package
	// documentation), and the provider's own resource is the node's, with
	// no service.* or telemetry.sdk.* attributes, which describe the agent
	// and stay on the self-metrics' resource.
	EntityKeys func(key string) bool
	// EntityHandles, with EntityKeys, resolves the entity handles the
	// collectors' Runner records in place of entity attributes
	// (collector.WithEntityHandles): a point whose attribute Key holds an
	// id goes, without it, under the Resource of the attributes
	// Attributes(id) returns. Points with entity attributes of their own
	// are regrouped by EntityKeys as before.
	EntityHandles EntityHandles
	// CardinalityLimit is the most series one instrument may have per
	// collection (the SDK folds the rest into one series with
	// otel.metric.overflow=true); 0 means DefaultCardinalityLimit.
	CardinalityLimit int
	// SchemaURL is the resource's schema URL (the semantic conventions the
	// metric and attribute names follow); empty: none.
	SchemaURL string
	// Self, with EntityKeys set, adds the agent's own MeterProvider
	// (SelfMeter): its metrics are collected at each export of the product
	// metrics and travel in the same request, on a Resource of their own
	// with the agent's service.* attributes (see the package
	// documentation). SelfReaders read them as well (the agent's
	// Prometheus exporter for /metrics); those readers never see the
	// product metrics.
	Self        bool
	SelfReaders []sdkmetric.Reader
}

// EntityHandles names the point attribute that holds an entity handle
// and how to read the entity attributes it stands for
// (collector.EntityHandleKey and collector.Entities.Attributes).
type EntityHandles struct {
	Key        string
	Attributes func(id string) ([]attribute.KeyValue, bool)
}

// DefaultCardinalityLimit is the default Config.CardinalityLimit: a node at
// 250 pods with 10 containers each has 2,500 series of each container
// metric and 1,250 of k8s.pod.status.phase, which the SDK's default (2,000)
// would fold; this leaves room for 4 times that (TestNothingLostAt250Pods).
// The limit caps memory; it does not reserve it.
const DefaultCardinalityLimit = 10000

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Protocol != "" && c.Protocol != ProtocolGRPC && c.Protocol != ProtocolHTTPProtobuf {
		errs = append(errs, fmt.Errorf("exporter: protocol %q is not supported; use grpc or http/protobuf", c.Protocol))
	}
	if c.CardinalityLimit < 0 {
		errs = append(errs, fmt.Errorf("exporter: cardinality limit %d must not be negative", c.CardinalityLimit))
	}
	if (c.Self || len(c.SelfReaders) > 0) && c.EntityKeys == nil {
		errs = append(errs, errors.New("exporter: Self needs EntityKeys: the agent's own metrics go on their own Resource when the request is regrouped"))
	}
	if (c.EntityHandles.Key == "") != (c.EntityHandles.Attributes == nil) || (c.EntityHandles.Key != "" && c.EntityKeys == nil) {
		errs = append(errs, errors.New("exporter: EntityHandles needs both Key and Attributes, and EntityKeys"))
	}
	if len(c.Readers) > 0 && c.EntityHandles.Key != "" {
		errs = append(errs, errors.New("exporter: Readers with EntityHandles: a reader of the product provider would see entity handles, not entity attributes; read the self-metrics with SelfReaders"))
	}
	if len(c.SelfReaders) > 0 && !c.Self {
		errs = append(errs, errors.New("exporter: SelfReaders without Self"))
	}
	if c.Interval < 0 || c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("exporter: interval %v and timeout %v must not be negative", c.Interval, c.Timeout))
	}
	r := c.Retry
	if r.InitialInterval < 0 || r.MaxInterval < 0 || r.MaxElapsedTime < 0 {
		errs = append(errs, errors.New("exporter: retry intervals must not be negative"))
	}
	return errors.Join(errs...)
}

// Stats counts export attempts as seen by the SDK (one per export, after the
// exporter's own retries).
type Stats struct {
	Exports  uint64 // successful exports
	Failures uint64 // exports that failed after retries
	// LastDataPoints is the number of data points in the last export
	// attempt; it stays flat while the collector is down because nothing
	// accumulates between failed exports.
	LastDataPoints int
	LastError      string
	Protocol       string
	// SentRequests and SentBytes count the OTLP requests written to the
	// connection and their bytes as they went on the wire (sent): each
	// attempt, and each part of a gRPC export sent in parts, is a request;
	// one that found no connection is not. Over HTTP they are
	// counted with Config.EntityKeys set (the agent's configuration):
	// without it the SDK exporter sends with a client of its own.
	SentRequests, SentBytes uint64
	// UnresolvedHandles counts data points whose entity handle was not in
	// the registry (Config.EntityHandles); each went out on the node's
	// resource with the handle as an attribute. It stays 0 unless
	// something other than the export collects the product provider.
	UnresolvedHandles uint64
}

// Provider owns the MeterProvider and its OTLP exporter.
type Provider struct {
	mp       *sdkmetric.MeterProvider
	self     *sdkmetric.MeterProvider // Config.Self
	exp      *countingExporter
	split    *splitter // nil without EntityKeys
	sent     *sent
	protocol string

	shutdownOnce sync.Once
	shutdownErr  error
}

// New builds the MeterProvider with a periodic reader over the OTLP exporter.
// It does not connect: the first export does. Call Shutdown to flush and stop.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	protocol := cfg.Protocol
	if protocol == "" {
		protocol = firstNonEmpty(getenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), ProtocolGRPC)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}

	var exp sdkmetric.Exporter
	var err error
	retry := cfg.Retry
	retry.InitialInterval = orDefault(retry.InitialInterval, time.Second)
	retry.MaxInterval = orDefault(retry.MaxInterval, 10*time.Second)
	retry.MaxElapsedTime = orDefault(retry.MaxElapsedTime, 20*time.Second)
	sent := &sent{}
	var split *splitter
	if cfg.EntityKeys != nil {
		split = &splitter{isEntity: cfg.EntityKeys, handles: cfg.EntityHandles, log: log.With("component", "exporter"), posts: sent}
	}
	var selfProd *selfProducer
	if cfg.Self {
		selfProd = &selfProducer{log: log.With("component", "self-metrics")}
		split.isSelf = selfProd.isSelf
	}
	// gzip unless the user chose: a node's export is mostly repeated
	// attribute strings, which compress well.
	gzipDefault := getenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION") == "" && getenv("OTEL_EXPORTER_OTLP_COMPRESSION") == ""
	switch protocol {
	case ProtocolGRPC:
		opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{
			Enabled: !retry.Disabled, InitialInterval: retry.InitialInterval,
			MaxInterval: retry.MaxInterval, MaxElapsedTime: retry.MaxElapsedTime,
		})}
		// WithDialOption replaces the options of an earlier call: all
		// go in one.
		dial := []grpc.DialOption{grpc.WithStatsHandler(sent)}
		if split != nil {
			dial = append(dial, grpc.WithChainUnaryInterceptor(split.unaryInterceptor))
		}
		opts = append(opts, otlpmetricgrpc.WithDialOption(dial...))
		if gzipDefault {
			opts = append(opts, otlpmetricgrpc.WithCompressor("gzip"))
		}
		exp, err = otlpmetricgrpc.New(ctx, opts...)
	case ProtocolHTTPProtobuf:
		opts := []otlpmetrichttp.Option{otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{
			Enabled: !retry.Disabled, InitialInterval: retry.InitialInterval,
			MaxInterval: retry.MaxInterval, MaxElapsedTime: retry.MaxElapsedTime,
		})}
		if split != nil {
			hc, herr := httpClient(split, getenv)
			if herr != nil {
				return nil, herr
			}
			opts = append(opts, otlpmetrichttp.WithHTTPClient(hc))
		}
		if gzipDefault {
			opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
		}
		exp, err = otlpmetrichttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("exporter: protocol %q (from OTEL_EXPORTER_OTLP_METRICS_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL) is not supported; use grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("exporter: create %s exporter: %w (check the OTEL_EXPORTER_OTLP_* variables)", protocol, err)
	}
	if split != nil {
		// The sums and gauges reach the splitter encoded by the
		// encoder, the rest by the SDK exporter.
		exp = &encodingExporter{Exporter: exp}
	}
	ce := &countingExporter{Exporter: exp, log: log.With("protocol", protocol), onExport: cfg.OnExport}

	res, err := newResource(ctx, cfg)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	limit := cfg.CardinalityLimit
	if limit == 0 {
		limit = DefaultCardinalityLimit
	}
	var self *sdkmetric.MeterProvider
	var producers []sdkmetric.Producer
	if selfProd != nil {
		// The self-metrics take the OTLP exporter's temporality and
		// aggregation (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE),
		// as they would with a reader of their own.
		selfProd.r = sdkmetric.NewManualReader(sdkmetric.WithTemporalitySelector(exp.Temporality),
			sdkmetric.WithAggregationSelector(exp.Aggregation))
		sopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithCardinalityLimit(limit),
			sdkmetric.WithReader(selfProd.r)}
		for _, r := range cfg.SelfReaders {
			sopts = append(sopts, sdkmetric.WithReader(r))
		}
		self = sdkmetric.NewMeterProvider(sopts...)
		producers = append(producers, selfProd)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithCardinalityLimit(limit),
		sdkmetric.WithReader(newReader(ce, cfg.Interval, cfg.Timeout, getenv, producers...))}
	for _, r := range cfg.Readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	return &Provider{mp: sdkmetric.NewMeterProvider(opts...), self: self, exp: ce, split: split, sent: sent, protocol: protocol}, nil
}

// newResource is the agent's resource: service.name, service.instance.id,
// service.version, telemetry.sdk.*, OTEL_RESOURCE_ATTRIBUTES and
// k8s.node.name. With cfg.EntityKeys the splitter strips the service.* and
// telemetry.sdk.* attributes from every resource but the self-metrics'
// one, leaving the node's: OTEL_RESOURCE_ATTRIBUTES (such as
// k8s.cluster.name) and k8s.node.name.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	defaults := []attribute.KeyValue{attribute.String("service.name", firstNonEmpty(cfg.ServiceName, "fleetagent"))}
	if cfg.ServiceVersion != "" {
		defaults = append(defaults, attribute.String("service.version", cfg.ServiceVersion))
	}
	if cfg.NodeName != "" {
		// One agent per node: the node names the instance.
		defaults = append(defaults, attribute.String("service.instance.id", cfg.NodeName))
	}
	// Later options override earlier ones: the environment overrides the
	// defaults, and the node name from the downward API is authoritative.
	// The telemetry.sdk.* detector carries the SDK's own schema URL, which
	// conflicts with cfg.SchemaURL: its attributes are taken without it.
	sdkRes, err := resource.New(ctx, resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("exporter: telemetry.sdk resource: %w", err)
	}
	opts := []resource.Option{resource.WithSchemaURL(cfg.SchemaURL), resource.WithAttributes(defaults...),
		resource.WithAttributes(sdkRes.Attributes()...), resource.WithFromEnv()}
	if cfg.NodeName != "" {
		opts = append(opts, resource.WithAttributes(attribute.String("k8s.node.name", cfg.NodeName)))
	}
	res, err := resource.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("exporter: build resource (check OTEL_RESOURCE_ATTRIBUTES is key=value,...): %w", err)
	}
	return res, nil
}

// MeterProvider returns the SDK MeterProvider.
func (p *Provider) MeterProvider() *sdkmetric.MeterProvider { return p.mp }

// Meter returns a meter of the provider.
func (p *Provider) Meter(name string) metric.Meter { return p.mp.Meter(name) }

// SelfMeter returns a meter for the agent's own metrics (Config.Self); they
// go out with the product metrics, on the agent's resource. Its scope name
// must differ from the product meters'. Without Config.Self it is Meter.
func (p *Provider) SelfMeter(name string) metric.Meter {
	if p.self == nil {
		return p.mp.Meter(name)
	}
	return p.self.Meter(name)
}

// ForceFlush collects and exports now.
func (p *Provider) ForceFlush(ctx context.Context) error { return p.mp.ForceFlush(ctx) }

// Shutdown flushes a last export and stops the reader and exporter. It is
// idempotent; later calls return the first result.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.shutdownOnce.Do(func() {
		// The product provider's last export collects the self-metrics
		// too, so the self provider stops after it.
		p.shutdownErr = p.mp.Shutdown(ctx)
		if p.self != nil {
			p.shutdownErr = errors.Join(p.shutdownErr, p.self.Shutdown(ctx))
		}
	})
	return p.shutdownErr
}

// Stats returns export counts.
func (p *Provider) Stats() Stats {
	s := p.exp.stats()
	s.Protocol = p.protocol
	s.SentRequests, s.SentBytes = p.sent.requests.Load(), p.sent.bytes.Load()
	if p.split != nil {
		s.UnresolvedHandles = p.split.unresolved.Load()
	}
	return s
}

// RegisterMetrics registers the fleetagent.otlpexport.* self-metrics of
// selfmetrics.Table.
func (p *Provider) RegisterMetrics(m metric.Meter) error {
	set := selfmetrics.NewSet(m)
	exports := set.Int64("fleetagent.otlpexport.exports")
	points := set.Int64("fleetagent.otlpexport.datapoints")
	requests := set.Int64("fleetagent.otlpexport.requests")
	sentBytes := set.Int64("fleetagent.otlpexport.sent")
	return set.Register(func(_ context.Context, o metric.Observer) error {
		s := p.Stats()
		o.ObserveInt64(exports, int64(s.Exports), metric.WithAttributes(attribute.String("result", "success")))
		o.ObserveInt64(exports, int64(s.Failures), metric.WithAttributes(attribute.String("result", "failure")))
		o.ObserveInt64(points, int64(s.LastDataPoints))
		o.ObserveInt64(requests, int64(s.SentRequests))
		o.ObserveInt64(sentBytes, int64(s.SentBytes))
		return nil
	})
}

// sent counts the OTLP requests written to the connection and their bytes
// on the wire: a gRPC stats handler on the exporter's connection (each
// request message written, with its frame header, as grpc-go reports it;
// an attempt that found no connection writes none) and, over HTTP, the
// splitter's round tripper (each request whose body the transport wrote,
// resends included: httptrace's WroteRequest).
type sent struct {
	requests, bytes atomic.Uint64
}

func (s *sent) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (s *sent) HandleRPC(_ context.Context, st stats.RPCStats) {
	if out, ok := st.(*stats.OutPayload); ok && out.IsClient() {
		s.requests.Add(1)
		s.bytes.Add(uint64(out.WireLength))
	}
}

func (s *sent) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (s *sent) HandleConn(context.Context, stats.ConnStats) {}

// posting returns ctx with a trace that counts each time the transport
// writes the request, of n body bytes, to a connection.
func (s *sent) posting(ctx context.Context, n int) context.Context {
	if s == nil {
		return ctx
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(w httptrace.WroteRequestInfo) {
		if w.Err == nil {
			s.requests.Add(1)
			s.bytes.Add(uint64(n))
		}
	}})
}

// countingExporter counts export results; it adds no buffering.
type countingExporter struct {
	sdkmetric.Exporter
	log      *slog.Logger
	onExport func(error)

	ok, failed atomic.Uint64
	points     atomic.Int64
	mu         sync.Mutex
	lastErr    string
	failing    bool
}

func (e *countingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	e.points.Store(int64(countPoints(rm)))
	err := e.Exporter.Export(ctx, rm)
	e.mu.Lock()
	if err != nil {
		e.failed.Add(1)
		e.lastErr = err.Error()
	} else {
		e.ok.Add(1)
	}
	if (err != nil) != e.failing {
		e.failing = err != nil
		if err != nil {
			e.log.Warn("OTLP export failing; dropping each failed batch after its retries", "err", err)
		} else {
			e.log.Info("OTLP export recovered")
		}
	}
	e.mu.Unlock()
	if e.onExport != nil {
		e.onExport(err)
	}
	return err
}

func (e *countingExporter) stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Exports: e.ok.Load(), Failures: e.failed.Load(), LastDataPoints: int(e.points.Load()), LastError: e.lastErr}
}

func countPoints(rm *metricdata.ResourceMetrics) int {
	n := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				n += len(d.DataPoints)
			case metricdata.Gauge[float64]:
				n += len(d.DataPoints)
			case metricdata.Sum[int64]:
				n += len(d.DataPoints)
			case metricdata.Sum[float64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[int64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[float64]:
				n += len(d.DataPoints)
			}
		}
	}
	return n
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
