package vscollector

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	// Both agents gzip by default; the receiver decodes it as a Collector does.
	_ "google.golang.org/grpc/encoding/gzip"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// SelfScope is the instrumentation scope of fleetagent's self-metrics; the
// receiver counts what it carries apart from the product's metrics.
const SelfScope = "github.com/fleetagent/fleetagent"

// Counts is what one receiver has taken in so far.
type Counts struct {
	// Requests are OTLP export requests; SelfRequests those that carry
	// nothing but SelfScope's metrics.
	Requests, SelfRequests int64
	// Payload is the decoded protobuf size of the requests; SelfPayload
	// the part of it in SelfScope's scope metrics.
	Payload, SelfPayload int64
	// Wire is every byte read from the exporter's TCP connections: HTTP/2
	// frames and headers and the (compressed) messages, as shipped.
	Wire int64
	// Gzip counts requests that arrived gzip-compressed.
	Gzip int64
	// Points are the data points in the requests, SelfPoints those in
	// SelfScope's metrics.
	Points, SelfPoints int64
}

// Sub is c minus an earlier snapshot.
func (c Counts) Sub(o Counts) Counts {
	return Counts{c.Requests - o.Requests, c.SelfRequests - o.SelfRequests, c.Payload - o.Payload, c.SelfPayload - o.SelfPayload, c.Wire - o.Wire, c.Gzip - o.Gzip, c.Points - o.Points, c.SelfPoints - o.SelfPoints}
}

// Receiver is a real OTLP/gRPC metrics receiver on loopback for one agent,
// counting requests, decoded payload bytes and bytes on the wire.
type Receiver struct {
	ln   net.Listener
	srv  *grpc.Server
	wire atomic.Int64

	mu sync.Mutex
	c  Counts
	// recording says whether Export keeps the requests in kept.
	recording bool
	kept      []*colmetricpb.ExportMetricsServiceRequest
}

// StartReceiver listens on a free loopback port.
func StartReceiver() (*Receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("vscollector receiver: listen: %w", err)
	}
	r := &Receiver{ln: ln, srv: grpc.NewServer()}
	colmetricpb.RegisterMetricsServiceServer(r.srv, &service{r: r})
	go func() { _ = r.srv.Serve(&countingListener{Listener: ln, n: &r.wire}) }()
	return r, nil
}

// Addr is host:port.
func (r *Receiver) Addr() string { return r.ln.Addr().String() }

// Counts is a snapshot.
func (r *Receiver) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.c
	c.Wire = r.wire.Load()
	return c
}

// Record starts keeping the requests received, dropping any kept before.
func (r *Receiver) Record() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recording, r.kept = true, nil
}

// Take stops keeping requests and returns those received since Record.
func (r *Receiver) Take() []*colmetricpb.ExportMetricsServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.kept
	r.recording, r.kept = false, nil
	return k
}

// Stop closes the receiver.
func (r *Receiver) Stop() { r.srv.Stop() }

type service struct {
	colmetricpb.UnimplementedMetricsServiceServer
	r *Receiver
}

func (s *service) Export(ctx context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	size := int64(proto.Size(req))
	var self, points, selfPoints int64
	onlySelf := true
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			n := dataPoints(sm)
			points += n
			if sm.GetScope().GetName() == SelfScope {
				self += int64(proto.Size(sm))
				selfPoints += n
			} else {
				onlySelf = false
			}
		}
	}
	gz := false
	if rc, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ RecvCompress() string }); ok {
		gz = rc.RecvCompress() == "gzip"
	}
	s.r.mu.Lock()
	s.r.c.Requests++
	s.r.c.Payload += size
	s.r.c.SelfPayload += self
	s.r.c.Points += points
	s.r.c.SelfPoints += selfPoints
	if onlySelf && self > 0 {
		s.r.c.SelfRequests++
	}
	if gz {
		s.r.c.Gzip++
	}
	if s.r.recording {
		s.r.kept = append(s.r.kept, req)
	}
	s.r.mu.Unlock()
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

func dataPoints(sm *metricpb.ScopeMetrics) int64 {
	var n int
	for _, m := range sm.GetMetrics() {
		n += len(m.GetGauge().GetDataPoints()) + len(m.GetSum().GetDataPoints()) + len(m.GetHistogram().GetDataPoints()) +
			len(m.GetExponentialHistogram().GetDataPoints()) + len(m.GetSummary().GetDataPoints())
	}
	return int64(n)
}

// countingListener counts the bytes read from every accepted connection.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}
