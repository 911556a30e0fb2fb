package exporter

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	// The sink accepts gzip-compressed requests, the exporter's default.
	_ "google.golang.org/grpc/encoding/gzip"
)

// BenchmarkIntervalAllocs measures what one interval allocates in the agent:
// one collection of all collectors (kubelet summary fetch and decode,
// informer state, the SDK's aggregation) and one export (the SDK's
// transform to OTLP protobuf, the regrouping into one resource per entity,
// protobuf encoding and gzip, the agent's default) over gRPC on loopback,
// at 30, 110 and 250 pods of 3 containers. The receiving end is a sink that
// takes the request's bytes without decoding them, so that the figures are
// the agent's side (plus the stand-in kubelet's write of its response and
// the gRPC server's framing and gunzip); BenchmarkCollectExport sends the
// same requests to the real OTLP receiver, which decodes them. MiB/min@10s
// is the allocation rate at a 10 s interval, the Collector's figure's unit.
func BenchmarkIntervalAllocs(b *testing.B) {
	for _, n := range []int{30, 110, 250} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			sink := startSink(b)
			prov := intervalPipeline(b, n, sink.addr)
			// One interval before timing: connections, the SDK's
			// aggregators and any cache are then as they are in a running
			// agent.
			if err := prov.ForceFlush(context.Background()); err != nil {
				b.Fatal(err)
			}
			sink.requests.Store(0)
			sink.bytes.Store(0)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			runIntervals(b, prov)
			runtime.ReadMemStats(&after)
			perInterval := float64(after.TotalAlloc-before.TotalAlloc) / float64(b.N)
			b.ReportMetric(perInterval*6/(1<<20), "MiB/min@10s")
			if got := sink.requests.Load(); got != int64(b.N) {
				b.Fatalf("the sink got %d requests for %d intervals", got, b.N)
			}
			b.ReportMetric(float64(sink.bytes.Load())/float64(b.N), "request-bytes/interval")
			if pts := prov.Stats().LastDataPoints; pts == 0 {
				b.Fatal("the last export had no data points")
			} else {
				b.ReportMetric(float64(pts), "points/interval")
			}
		})
	}
}

// sink is an OTLP gRPC MetricsService that counts requests and their
// (decompressed) size without decoding them.
type sink struct {
	addr     string
	requests atomic.Int64
	bytes    atomic.Int64
}

func startSink(b *testing.B) *sink {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &sink{addr: lis.Addr().String()}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(sinkCodec{s}))
	colmetricpb.RegisterMetricsServiceServer(srv, sinkService{})
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return s
}

type sinkService struct {
	colmetricpb.UnimplementedMetricsServiceServer
}

func (sinkService) Export(context.Context, *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

// sinkCodec counts what it is given and decodes nothing; responses are
// empty messages (zero bytes on the wire).
type sinkCodec struct{ s *sink }

func (c sinkCodec) Marshal(any) (mem.BufferSlice, error) { return nil, nil }
func (c sinkCodec) Unmarshal(data mem.BufferSlice, _ any) error {
	c.s.requests.Add(1)
	c.s.bytes.Add(int64(data.Len()))
	return nil
}
func (c sinkCodec) Name() string { return "proto" }
