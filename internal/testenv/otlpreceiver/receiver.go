// Package otlpreceiver is a real OTLP metrics receiver for tests and local runs:
// a gRPC server of the OTLP MetricsService and an HTTP/protobuf endpoint
// (/v1/metrics), both on loopback. It records what arrives so tests can query
// metric names, units, attributes and values, and it can be told to refuse
// (gRPC UNAVAILABLE / RESOURCE_EXHAUSTED, HTTP 429 / 503), to be slow, or to be
// down, so exporters' retry and backoff are exercised against real wire
// behaviour rather than mocks.
package otlpreceiver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	// gzip-compressed gRPC requests are decoded as a real Collector decodes
	// them, also when the exporter runs in another process (the agent
	// binary, the real node): the exporter is what registers gzip in-process.
	_ "google.golang.org/grpc/encoding/gzip"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// maxHTTPBody bounds one HTTP export request; the OTLP exporters never send
// anything close to this for one node's metrics.
const maxHTTPBody = 64 << 20

// Options configures a Receiver. The zero value is usable.
type Options struct {
	// Summary, when set, receives one line per accepted export request
	// ("otlp grpc export: 123 points, 45 metrics, resource
	// k8s.node.name=n1"). It is written from server goroutines, so it must
	// be safe for concurrent use (Logger's writer is).
	Summary io.Writer
	// GRPCAddr and HTTPAddr are the listen addresses; empty means
	// 127.0.0.1:0 (a free loopback port).
	GRPCAddr, HTTPAddr string
	// HTTPTLS, when set, makes the HTTP endpoint https with this
	// configuration (exports go to https://<addr>/v1/metrics).
	HTTPTLS *tls.Config
	// OnRequest, when set, is given every accepted request as it arrived,
	// after it was recorded (e.g. to hand the export on to OpenTelemetry
	// Collector components as pdata). It is called from server goroutines
	// and must not keep or modify req after it returns.
	OnRequest func(protocol string, req *colmetricpb.ExportMetricsServiceRequest)
}

// Failure tells the receiver to refuse export requests.
type Failure struct {
	// GRPCCode is returned to gRPC clients (codes.OK means accept).
	GRPCCode codes.Code
	// HTTPStatus is returned to HTTP clients (0 means accept).
	HTTPStatus int
	// RetryAfter, when > 0, is sent as a gRPC RetryInfo detail and an HTTP
	// Retry-After header. OTLP clients retry RESOURCE_EXHAUSTED only when
	// RetryInfo is present, so set it to simulate a throttling collector.
	RetryAfter time.Duration
}

// Point is one data point as it arrived.
type Point struct {
	Metric      string
	Unit        string
	Description string
	// Type is "gauge", "sum", "histogram", "exponential_histogram" or "summary".
	Type       string
	Monotonic  bool
	Cumulative bool
	Resource   map[string]string
	// SchemaURL is the resource's schema URL.
	SchemaURL string
	Scope     string
	Attrs     map[string]string
	// Value holds the gauge/sum value (ints converted) or the histogram sum.
	Value float64
	// Count is the histogram count (0 for gauges and sums).
	Count uint64
	// StartTime is the point's start time in Unix nanoseconds (0 when
	// unset, as for gauges).
	StartTime uint64
}

// Get returns the point's attribute k, or its resource's.
func (p Point) Get(k string) string {
	if v, ok := p.Attrs[k]; ok {
		return v
	}
	return p.Resource[k]
}

// All returns the resource's attributes and the point's in one map.
func (p Point) All() map[string]string {
	m := make(map[string]string, len(p.Resource)+len(p.Attrs))
	for k, v := range p.Resource {
		m[k] = v
	}
	for k, v := range p.Attrs {
		m[k] = v
	}
	return m
}

// Export is one request as it arrived.
type Export struct {
	Protocol string // "grpc" or "http"
	// Resources is the number of ResourceMetrics in the request.
	Resources int
	// Bytes is the request's protobuf size, uncompressed.
	Bytes int
	// WireBytes is the request's message as it arrived, compressed when
	// Encoding is gzip: over gRPC the message and its 5-byte gRPC frame
	// header (grpc stats.InPayload.WireLength), over HTTP the body. HTTP/2
	// and HTTP headers are not counted.
	WireBytes int
	// Encoding is how the request arrived on the wire: "gzip" or
	// "identity" (HTTP Content-Encoding, gRPC grpc-encoding).
	Encoding string
	Points   []Point
	Received time.Time
}

// Stats is a snapshot of what the receiver has seen.
type Stats struct {
	Accepted int // requests that were recorded
	Refused  int // requests answered with a configured failure
	Points   int // data points in accepted requests
}

// Receiver records OTLP metric exports. All methods are safe for concurrent use.
type Receiver struct {
	opts Options

	mu       sync.Mutex
	grpcSrv  *grpc.Server
	httpSrv  *http.Server
	grpcAddr string
	httpAddr string
	up       bool
	wg       sync.WaitGroup
	failure  Failure
	delay    time.Duration
	exports  []Export
	maxKeep  int
	stats    Stats
	arrivals chan struct{}
	closed   bool
}

// Start listens on loopback and serves until Shutdown.
func Start(opts Options) (*Receiver, error) {
	r := &Receiver{opts: opts, maxKeep: 1000, arrivals: make(chan struct{}, 1)}
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = "127.0.0.1:0"
	}
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = "127.0.0.1:0"
	}
	r.grpcAddr, r.httpAddr = opts.GRPCAddr, opts.HTTPAddr
	if err := r.Up(); err != nil {
		return nil, err
	}
	return r, nil
}

// GRPCAddr is the host:port of the gRPC endpoint (use with
// OTEL_EXPORTER_OTLP_ENDPOINT=http://<addr> and insecure).
func (r *Receiver) GRPCAddr() string { r.mu.Lock(); defer r.mu.Unlock(); return r.grpcAddr }

// HTTPAddr is the host:port of the HTTP endpoint; exports go to
// http://<addr>/v1/metrics.
func (r *Receiver) HTTPAddr() string { r.mu.Lock(); defer r.mu.Unlock(); return r.httpAddr }

// Up (re)starts both servers on the same addresses after Down. It is a no-op
// when already up.
func (r *Receiver) Up() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.up {
		return nil
	}
	if r.closed {
		return errors.New("otlpreceiver: Up after Shutdown")
	}
	gl, err := net.Listen("tcp", r.grpcAddr)
	if err != nil {
		return fmt.Errorf("otlpreceiver: listen gRPC on %s: %w", r.grpcAddr, err)
	}
	hl, err := net.Listen("tcp", r.httpAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("otlpreceiver: listen HTTP on %s: %w", r.httpAddr, err)
	}
	r.grpcAddr, r.httpAddr = gl.Addr().String(), hl.Addr().String()
	if r.opts.HTTPTLS != nil {
		hl = tls.NewListener(hl, r.opts.HTTPTLS)
	}

	r.grpcSrv = grpc.NewServer(grpc.StatsHandler(wireStats{}))
	colmetricpb.RegisterMetricsServiceServer(r.grpcSrv, &grpcService{r: r})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/metrics", r.serveHTTP)
	r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	gs, hs := r.grpcSrv, r.httpSrv
	r.wg.Add(2)
	go func() { defer r.wg.Done(); _ = gs.Serve(gl) }()
	go func() { defer r.wg.Done(); _ = hs.Serve(hl) }()
	r.up = true
	return nil
}

// Down stops both servers (connections are closed and new ones refused)
// until Up. It waits for the serving goroutines to exit.
func (r *Receiver) Down() {
	r.mu.Lock()
	if !r.up {
		r.mu.Unlock()
		return
	}
	gs, hs := r.grpcSrv, r.httpSrv
	r.up = false
	r.mu.Unlock()
	gs.Stop()
	_ = hs.Close()
	r.wg.Wait()
}

// Shutdown stops the receiver for good. It is idempotent and safe to call
// concurrently with requests.
func (r *Receiver) Shutdown(ctx context.Context) error {
	r.Down()
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return ctx.Err()
}

// SetFailure makes every following request fail as described; the zero
// Failure accepts again.
func (r *Receiver) SetFailure(f Failure) { r.mu.Lock(); r.failure = f; r.mu.Unlock() }

// SetDelay makes every following request wait d (or until the client gives
// up) before it is answered.
func (r *Receiver) SetDelay(d time.Duration) { r.mu.Lock(); r.delay = d; r.mu.Unlock() }

// Stats returns counts of what has arrived.
func (r *Receiver) Stats() Stats { r.mu.Lock(); defer r.mu.Unlock(); return r.stats }

// Exports returns the accepted requests, oldest first (the last 1000 are kept).
func (r *Receiver) Exports() []Export {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Export(nil), r.exports...)
}

// Last returns the points of the most recent accepted request.
func (r *Receiver) Last() []Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.exports) == 0 {
		return nil
	}
	return r.exports[len(r.exports)-1].Points
}

// Reset forgets recorded exports and counts.
func (r *Receiver) Reset() {
	r.mu.Lock()
	r.exports, r.stats = nil, Stats{}
	r.mu.Unlock()
}

// WaitAccepted and WaitRefused support one waiting goroutine at a time.

// WaitAccepted blocks until at least n requests were accepted or ctx ends.
func (r *Receiver) WaitAccepted(ctx context.Context, n int) error {
	return r.wait(ctx, "accepted", n, func(s Stats) int { return s.Accepted })
}

// WaitRefused blocks until at least n requests were refused or ctx ends.
func (r *Receiver) WaitRefused(ctx context.Context, n int) error {
	return r.wait(ctx, "refused", n, func(s Stats) int { return s.Refused })
}

// wait is woken by every request (the arrivals channel has capacity 1 and is
// signalled without blocking), so it never polls on a timer.
func (r *Receiver) wait(ctx context.Context, what string, n int, get func(Stats) int) error {
	for {
		if get(r.Stats()) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("otlpreceiver: waiting for %d %s exports (have %d): %w", n, what, get(r.Stats()), ctx.Err())
		case <-r.arrivals:
		}
	}
}

func (r *Receiver) signal() {
	select {
	case r.arrivals <- struct{}{}:
	default:
	}
}

// Find returns the points named metric whose attributes, or their
// resource's, include every key=value of match.
func Find(points []Point, metric string, match map[string]string) []Point {
	var out []Point
	for _, p := range points {
		if p.Metric != metric {
			continue
		}
		ok := true
		for k, v := range match {
			if p.Get(k) != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

// MetricNames returns the sorted distinct metric names in points.
func MetricNames(points []Point) []string {
	seen := map[string]bool{}
	for _, p := range points {
		seen[p.Metric] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// admit applies delay and failure; it returns the failure to answer with.
func (r *Receiver) admit(ctx context.Context) (Failure, bool) {
	r.mu.Lock()
	d, f := r.delay, r.failure
	r.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if f.GRPCCode != codes.OK || f.HTTPStatus != 0 {
		r.mu.Lock()
		r.stats.Refused++
		r.mu.Unlock()
		r.signal()
		return f, false
	}
	return f, true
}

func (r *Receiver) record(protocol, encoding string, wire int, req *colmetricpb.ExportMetricsServiceRequest) {
	pts := Flatten(req)
	r.mu.Lock()
	r.exports = append(r.exports, Export{Protocol: protocol, Resources: len(req.GetResourceMetrics()), Bytes: proto.Size(req), WireBytes: wire, Encoding: encoding, Points: pts, Received: time.Now()})
	if len(r.exports) > r.maxKeep {
		r.exports = r.exports[len(r.exports)-r.maxKeep:]
	}
	r.stats.Accepted++
	r.stats.Points += len(pts)
	r.mu.Unlock()
	if r.opts.OnRequest != nil {
		r.opts.OnRequest(protocol, req)
	}
	r.signal()
	if r.opts.Summary != nil {
		fmt.Fprintln(r.opts.Summary, summaryLine(protocol, req, pts))
	}
}

func summaryLine(protocol string, req *colmetricpb.ExportMetricsServiceRequest, pts []Point) string {
	var res []string
	seen := map[string]bool{}
	for _, rm := range req.GetResourceMetrics() {
		for _, kv := range rm.GetResource().GetAttributes() {
			if kv.GetKey() == "k8s.node.name" || kv.GetKey() == "service.name" {
				s := kv.GetKey() + "=" + anyString(kv.GetValue())
				if !seen[s] {
					seen[s] = true
					res = append(res, s)
				}
			}
		}
	}
	return fmt.Sprintf("otlp %s export: %d points, %d metrics, %d resources, resource %s", protocol, len(pts), len(MetricNames(pts)), len(req.GetResourceMetrics()), strings.Join(res, ","))
}

// wireStats records each gRPC request message's size on the wire into the
// wireSize its TagRPC put in the request's context; grpc-go reports it
// while decoding the request, before the service method runs.
type wireStats struct{}

type wireKey struct{}

type wireSize struct{ n atomic.Int64 }

func (wireStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, wireKey{}, &wireSize{})
}

func (wireStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		if w, ok := ctx.Value(wireKey{}).(*wireSize); ok {
			w.n.Store(int64(in.WireLength))
		}
	}
}

func (wireStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (wireStats) HandleConn(context.Context, stats.ConnStats) {}

type grpcService struct {
	colmetricpb.UnimplementedMetricsServiceServer
	r *Receiver
}

func (s *grpcService) Export(ctx context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	if f, ok := s.r.admit(ctx); !ok {
		code := f.GRPCCode
		if code == codes.OK {
			code = codes.Unavailable
		}
		st := status.New(code, "otlpreceiver: configured to refuse")
		if f.RetryAfter > 0 {
			if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(f.RetryAfter)}); err == nil {
				st = d
			}
		}
		return nil, st.Err()
	}
	// grpc-go keeps grpc-encoding out of the metadata; its server stream
	// reports it.
	enc := "identity"
	if rc, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ RecvCompress() string }); ok && rc.RecvCompress() != "" {
		enc = rc.RecvCompress()
	}
	wire := 0
	if w, ok := ctx.Value(wireKey{}).(*wireSize); ok {
		wire = int(w.n.Load())
	}
	s.r.record("grpc", enc, wire, req)
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "otlpreceiver: only application/x-protobuf is supported, got "+ct, http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxHTTPBody))
	if err != nil {
		http.Error(w, "otlpreceiver: read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	wire := len(body)
	if req.Header.Get("Content-Encoding") == "gzip" {
		body, err = gunzip(body)
		if err != nil {
			http.Error(w, "otlpreceiver: gunzip body: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	if f, ok := r.admit(req.Context()); !ok {
		code := f.HTTPStatus
		if code == 0 {
			code = http.StatusServiceUnavailable
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
		}
		http.Error(w, "otlpreceiver: configured to refuse", code)
		return
	}
	var msg colmetricpb.ExportMetricsServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		http.Error(w, "otlpreceiver: decode ExportMetricsServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	enc := req.Header.Get("Content-Encoding")
	if enc == "" {
		enc = "identity"
	}
	r.record("http", enc, wire, &msg)
	out, _ := proto.Marshal(&colmetricpb.ExportMetricsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Flatten turns an export request into one Point per data point.
func Flatten(req *colmetricpb.ExportMetricsServiceRequest) []Point {
	var out []Point
	for _, rm := range req.GetResourceMetrics() {
		res := attrMap(rm.GetResource().GetAttributes())
		for _, sm := range rm.GetScopeMetrics() {
			scope := sm.GetScope().GetName()
			for _, m := range sm.GetMetrics() {
				base := Point{Metric: m.GetName(), Unit: m.GetUnit(), Description: m.GetDescription(), Resource: res, SchemaURL: rm.GetSchemaUrl(), Scope: scope}
				switch d := m.GetData().(type) {
				case *metricpb.Metric_Gauge:
					base.Type = "gauge"
					for _, dp := range d.Gauge.GetDataPoints() {
						out = append(out, numberPoint(base, dp))
					}
				case *metricpb.Metric_Sum:
					base.Type = "sum"
					base.Monotonic = d.Sum.GetIsMonotonic()
					base.Cumulative = d.Sum.GetAggregationTemporality() == metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
					for _, dp := range d.Sum.GetDataPoints() {
						out = append(out, numberPoint(base, dp))
					}
				case *metricpb.Metric_Histogram:
					base.Type = "histogram"
					base.Cumulative = d.Histogram.GetAggregationTemporality() == metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
					out = appendSumCountPoints(out, base, d.Histogram.GetDataPoints())
				case *metricpb.Metric_ExponentialHistogram:
					base.Type = "exponential_histogram"
					out = appendSumCountPoints(out, base, d.ExponentialHistogram.GetDataPoints())
				case *metricpb.Metric_Summary:
					base.Type = "summary"
					out = appendSumCountPoints(out, base, d.Summary.GetDataPoints())
				}
			}
		}
	}
	return out
}

func numberPoint(base Point, dp *metricpb.NumberDataPoint) Point {
	p := base
	p.Attrs = attrMap(dp.GetAttributes())
	p.StartTime = dp.GetStartTimeUnixNano()
	switch v := dp.GetValue().(type) {
	case *metricpb.NumberDataPoint_AsInt:
		p.Value = float64(v.AsInt)
	case *metricpb.NumberDataPoint_AsDouble:
		p.Value = v.AsDouble
	}
	return p
}

// sumCountPoint is a data point with a sum and a count: a histogram's, an
// exponential histogram's or a summary's.
type sumCountPoint interface {
	GetAttributes() []*commonpb.KeyValue
	GetSum() float64
	GetCount() uint64
}

// appendSumCountPoints appends a Point per data point, with the sum as its
// Value and the count as its Count.
func appendSumCountPoints[D sumCountPoint](out []Point, base Point, dps []D) []Point {
	for _, dp := range dps {
		p := base
		p.Attrs = attrMap(dp.GetAttributes())
		p.Value, p.Count = dp.GetSum(), dp.GetCount()
		out = append(out, p)
	}
	return out
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = anyString(kv.GetValue())
	}
	return m
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	default:
		return fmt.Sprint(v)
	}
}

// Logger returns an io.Writer that logs each summary line with slog, for
// `make run`.
func Logger(l *slog.Logger) io.Writer { return slogWriter{l} }

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
