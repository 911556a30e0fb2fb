package otlpreceiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
	"github.com/fleetagent/fleetagent/internal/testenv/testlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
)

// TestMain checks that Down and Shutdown leave no goroutine behind.
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// request is one gauge and one cumulative counter.
func request() *colmetricpb.ExportMetricsServiceRequest {
	return &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: []*metricpb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("k8s.node.name", "n1")}},
		ScopeMetrics: []*metricpb.ScopeMetrics{{
			Scope: &commonpb.InstrumentationScope{Name: "test"},
			Metrics: []*metricpb.Metric{
				{Name: "k8s.pod.cpu.usage", Unit: "{cpu}", Data: &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{
					DataPoints: []*metricpb.NumberDataPoint{{Attributes: []*commonpb.KeyValue{str("k8s.pod.name", "a")},
						Value: &metricpb.NumberDataPoint_AsDouble{AsDouble: 0.25}}}}}},
				{Name: "k8s.pod.network.io", Unit: "By", Data: &metricpb.Metric_Sum{Sum: &metricpb.Sum{
					IsMonotonic: true, AggregationTemporality: metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
					DataPoints: []*metricpb.NumberDataPoint{{Attributes: []*commonpb.KeyValue{str("k8s.pod.name", "a"), str("network.io.direction", "receive")},
						Value: &metricpb.NumberDataPoint_AsInt{AsInt: 42}}}}}},
			},
		}},
	}}}
}

func start(t *testing.T, opts Options) *Receiver {
	t.Helper()
	r, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	return r
}

func grpcClient(t *testing.T, addr string) colmetricpb.MetricsServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return colmetricpb.NewMetricsServiceClient(conn)
}

func postHTTP(t *testing.T, addr string, body []byte, gz bool) *http.Response {
	t.Helper()
	if gz {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write(body)
		_ = w.Close()
		body = b.Bytes()
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/metrics", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestRecordsGRPCAndHTTP(t *testing.T) {
	summary := &testlog.Buffer{}
	r := start(t, Options{Summary: summary})
	ctx := context.Background()
	if _, err := grpcClient(t, r.GRPCAddr()).Export(ctx, request()); err != nil {
		t.Fatal(err)
	}
	body, _ := proto.Marshal(request())
	if resp := postHTTP(t, r.HTTPAddr(), body, true); resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP export: %s", resp.Status)
	}
	ex := r.Exports()
	if len(ex) != 2 || ex[0].Protocol != "grpc" || ex[1].Protocol != "http" {
		t.Fatalf("exports = %+v", ex)
	}
	for _, e := range ex {
		cpu := Find(e.Points, "k8s.pod.cpu.usage", map[string]string{"k8s.pod.name": "a"})
		if len(cpu) != 1 || cpu[0].Value != 0.25 || cpu[0].Unit != "{cpu}" || cpu[0].Type != "gauge" || cpu[0].Resource["k8s.node.name"] != "n1" {
			t.Errorf("%s cpu point = %+v", e.Protocol, cpu)
		}
		nio := Find(e.Points, "k8s.pod.network.io", map[string]string{"network.io.direction": "receive"})
		if len(nio) != 1 || nio[0].Value != 42 || !nio[0].Monotonic || !nio[0].Cumulative {
			t.Errorf("%s network point = %+v", e.Protocol, nio)
		}
	}
	if got := MetricNames(r.Last()); strings.Join(got, ",") != "k8s.pod.cpu.usage,k8s.pod.network.io" {
		t.Errorf("MetricNames = %v", got)
	}
	if s := r.Stats(); s.Accepted != 2 || s.Points != 4 || s.Refused != 0 {
		t.Errorf("stats = %+v", s)
	}
	want := "otlp grpc export: 2 points, 2 metrics, 1 resources, resource k8s.node.name=n1\notlp http export: 2 points, 2 metrics, 1 resources, resource k8s.node.name=n1\n"
	if summary.String() != want {
		t.Errorf("summary lines = %q, want %q", summary.String(), want)
	}
}

// TestOnRequestSeesAcceptedRequestsOnly: OnRequest gets every accepted
// request as it arrived, over gRPC and HTTP (gzip decoded), and none that
// was refused.
func TestOnRequestSeesAcceptedRequestsOnly(t *testing.T) {
	type seen struct {
		protocol string
		req      *colmetricpb.ExportMetricsServiceRequest
	}
	got := make(chan seen, 4)
	r := start(t, Options{OnRequest: func(p string, req *colmetricpb.ExportMetricsServiceRequest) {
		got <- seen{p, proto.Clone(req).(*colmetricpb.ExportMetricsServiceRequest)}
	}})
	ctx := context.Background()
	r.SetFailure(Failure{GRPCCode: codes.Unavailable, HTTPStatus: http.StatusServiceUnavailable})
	if _, err := grpcClient(t, r.GRPCAddr()).Export(ctx, request()); status.Code(err) != codes.Unavailable {
		t.Fatalf("refused export: %v", err)
	}
	r.SetFailure(Failure{})
	if _, err := grpcClient(t, r.GRPCAddr()).Export(ctx, request()); err != nil {
		t.Fatal(err)
	}
	body, _ := proto.Marshal(request())
	if resp := postHTTP(t, r.HTTPAddr(), body, true); resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP export: %s", resp.Status)
	}
	for _, want := range []string{"grpc", "http"} {
		s := <-got
		if s.protocol != want || !proto.Equal(s.req, request()) {
			t.Errorf("OnRequest got %s %v, want %s and the request as sent", s.protocol, s.req, want)
		}
	}
	if len(got) != 0 {
		t.Errorf("OnRequest called %d more times (a refused request?)", len(got))
	}
}

func TestFailuresAndDown(t *testing.T) {
	r := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := grpcClient(t, r.GRPCAddr())
	body, _ := proto.Marshal(request())

	r.SetFailure(Failure{GRPCCode: codes.ResourceExhausted, HTTPStatus: http.StatusTooManyRequests, RetryAfter: 2 * time.Second})
	_, err := client.Export(ctx, request())
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || len(st.Details()) != 1 {
		t.Errorf("gRPC refusal = %v, want RESOURCE_EXHAUSTED with RetryInfo", err)
	} else if ri, ok := st.Details()[0].(*errdetails.RetryInfo); !ok || ri.RetryDelay.AsDuration() != 2*time.Second {
		t.Errorf("RetryInfo = %v", st.Details()[0])
	}
	resp := postHTTP(t, r.HTTPAddr(), body, false)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("HTTP refusal = %s Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	if s := r.Stats(); s.Refused != 2 || s.Accepted != 0 {
		t.Errorf("stats = %+v", s)
	}
	r.SetFailure(Failure{})

	r.Down()
	if _, err := client.Export(ctx, request(), grpc.WaitForReady(false)); status.Code(err) != codes.Unavailable {
		t.Errorf("export while down: %v, want UNAVAILABLE", err)
	}
	if _, err := http.Post("http://"+r.HTTPAddr()+"/v1/metrics", "application/x-protobuf", bytes.NewReader(body)); err == nil {
		t.Error("HTTP export while down succeeded")
	}
	if err := r.Up(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Export(ctx, request(), grpc.WaitForReady(true)); err != nil {
		t.Errorf("export after Up: %v", err)
	}
	if err := r.WaitAccepted(ctx, 1); err != nil {
		t.Error(err)
	}

	if resp := postHTTP(t, r.HTTPAddr(), []byte("not protobuf"), false); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("garbage body: %s, want 400", resp.Status)
	}
}

func TestShutdownIdempotent(t *testing.T) {
	r, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := r.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Up(); err == nil {
		t.Error("Up after Shutdown succeeded")
	}
}

// TestWireBytes: the receiver records what a request cost on the wire:
// over gRPC the message and its 5-byte frame header, gzip-compressed when
// the client compresses; over HTTP the body as sent.
func TestWireBytes(t *testing.T) {
	r := start(t, Options{})
	ctx := context.Background()
	req := request()
	size := proto.Size(req)
	if _, err := grpcClient(t, r.GRPCAddr()).Export(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := grpcClient(t, r.GRPCAddr()).Export(ctx, req, grpc.UseCompressor("gzip")); err != nil {
		t.Fatal(err)
	}
	body, _ := proto.Marshal(req)
	if resp := postHTTP(t, r.HTTPAddr(), body, false); resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP export: %s", resp.Status)
	}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = w.Write(body)
	_ = w.Close()
	if resp := postHTTP(t, r.HTTPAddr(), body, true); resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP export: %s", resp.Status)
	}
	ex := r.Exports()
	if len(ex) != 4 {
		t.Fatalf("%d exports, want 4", len(ex))
	}
	if ex[0].Encoding != "identity" || ex[0].WireBytes != size+5 || ex[0].Bytes != size {
		t.Errorf("gRPC identity: encoding %s, wire %d, bytes %d; want identity, %d, %d", ex[0].Encoding, ex[0].WireBytes, ex[0].Bytes, size+5, size)
	}
	if ex[1].Encoding != "gzip" || ex[1].WireBytes <= 5 || ex[1].WireBytes == size+5 || ex[1].Bytes != size {
		t.Errorf("gRPC gzip: encoding %s, wire %d, bytes %d; want gzip and a compressed size", ex[1].Encoding, ex[1].WireBytes, ex[1].Bytes)
	}
	if ex[2].WireBytes != size {
		t.Errorf("HTTP identity: wire %d, want %d", ex[2].WireBytes, size)
	}
	if ex[3].Encoding != "gzip" || ex[3].WireBytes != gz.Len() {
		t.Errorf("HTTP gzip: encoding %s, wire %d; want gzip, %d", ex[3].Encoding, ex[3].WireBytes, gz.Len())
	}
}
