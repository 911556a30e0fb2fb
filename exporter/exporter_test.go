package exporter

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestMain silences the OTel global error handler (the tests refuse exports
// on purpose, and the provider's own log says so once per change) and checks
// that Shutdown leaves no goroutine behind.
func TestMain(m *testing.M) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	os.Exit(leakcheck.Main(m))
}

func loadState(t testing.TB) *fakestate.State { return fakestate.Fixture(t, "..") }

func podValues(ps []*corev1.Pod) []corev1.Pod {
	out := make([]corev1.Pod, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

type env struct {
	recv    *otlpreceiver.Receiver
	prov    *Provider
	state   *fakestate.State
	kubelet *fakekubelet.Server
}

// setup starts a receiver, points the standard OTEL_* variables at it, and
// builds the provider with the agent's collectors on it. Exports happen only
// on ForceFlush (the interval is an hour), except where cfg sets Interval.
func setup(t *testing.T, protocol string, cfg Config, created ...func(*Provider)) *env {
	t.Helper()
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
	addr := recv.GRPCAddr()
	if protocol == ProtocolHTTPProtobuf {
		addr = recv.HTTPAddr()
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=test-cluster,deployment.environment.name=ci")

	st := loadState(t)
	k, err := fakekubelet.StartForPods("../collector/testdata/summary.json", "", podValues(st.Pods()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)

	cfg.NodeName = "node-1"
	cfg.EntityKeys = collector.IsResourceAttribute // the product provider, as the agent builds it
	ents := collector.NewEntities()
	cfg.EntityHandles = EntityHandles{Key: collector.EntityHandleKey, Attributes: ents.Attributes}
	cfg.SchemaURL = collector.SchemaURL
	if cfg.Interval == 0 {
		cfg.Interval = time.Hour
	}
	// Nothing exports before the collectors are registered below, but the
	// The periodic reader starts at once: let the caller see the provider first.
	var prov *Provider
	cfgOnExport := cfg.OnExport
	ready := make(chan struct{})
	if cfgOnExport != nil {
		cfg.OnExport = func(err error) { <-ready; cfgOnExport(err) }
	}
	prov, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range created {
		f(prov)
	}
	close(ready)
	t.Cleanup(func() { _ = prov.Shutdown(context.Background()) })
	cs, err := collector.Default(collector.Config{
		PodLabels: []string{"app"},
		// Each ForceFlush stands for one export interval: scrape every time.
		Kubelet: collector.KubeletConfig{Endpoint: k.URL(), MinInterval: -1},
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	runner, err := collector.NewRunner(prov.Meter("github.com/fleetagent/fleetagent/collector"), cs, collector.WithEntityHandles(ents))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = runner.Shutdown(context.Background()) })
	if err := prov.RegisterMetrics(prov.Meter("github.com/fleetagent/fleetagent/self")); err != nil {
		t.Fatal(err)
	}
	return &env{recv: recv, prov: prov, state: st, kubelet: k}
}

func one(t *testing.T, pts []otlpreceiver.Point, metric string, match map[string]string) otlpreceiver.Point {
	t.Helper()
	got := otlpreceiver.Find(pts, metric, match)
	if len(got) != 1 {
		t.Fatalf("%s%v: %d points, want 1", metric, match, len(got))
	}
	return got[0]
}

// TestExportArrives checks names, units, values, kinds and attributes as
// they arrive at a real OTLP receiver, over gRPC and HTTP/protobuf.
func TestExportArrives(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			e := setup(t, protocol, Config{})
			if err := e.prov.ForceFlush(context.Background()); err != nil {
				t.Fatalf("export: %v", err)
			}
			exports := e.recv.Exports()
			if len(exports) != 1 || exports[0].Protocol != map[string]string{ProtocolGRPC: "grpc", ProtocolHTTPProtobuf: "http"}[protocol] {
				t.Fatalf("exports = %d (%v), want one over %s", len(exports), exports, protocol)
			}
			pts := exports[0].Points
			web := map[string]string{"k8s.namespace.name": "shop", "k8s.pod.name": "web-5d8f7c6b9-abcde",
				"k8s.pod.uid": "c3d4e5f6-0718-4293-a4b5-c6d7e8f90a1b", "k8s.pod.label.app": "web"}

			p := one(t, pts, "k8s.pod.cpu.usage", web)
			if p.Unit != "{cpu}" || p.Type != "gauge" || p.Value != 0.017349508 {
				t.Errorf("k8s.pod.cpu.usage = %+v, want gauge {cpu} 0.017349508", p)
			}
			for k, v := range map[string]string{"k8s.node.name": "node-1", "k8s.cluster.name": "test-cluster",
				"deployment.environment.name": "ci", "k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.deployment.name": "web",
				"service.name": "", "telemetry.sdk.language": ""} {
				if p.Resource[k] != v {
					t.Errorf("resource %s = %q, want %q (resource %v)", k, p.Resource[k], v, p.Resource)
				}
			}
			if len(p.Attrs) != 0 {
				t.Errorf("k8s.pod.cpu.usage point attributes %v, want none: the pod is the resource", p.Attrs)
			}
			p = one(t, pts, "k8s.pod.memory.working_set", web)
			if p.Unit != "By" || p.Value != 41943040+50331648 {
				t.Errorf("k8s.pod.memory.working_set = %+v", p)
			}
			p = one(t, pts, "k8s.pod.network.io", map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "network.io.direction": "transmit", "network.interface.name": "eth0"})
			if p.Unit != "By" || p.Type != "sum" || !p.Monotonic || !p.Cumulative || p.Value != 2345678901 {
				t.Errorf("k8s.pod.network.io = %+v, want cumulative monotonic sum 2345678901 By", p)
			}
			p = one(t, pts, "container.cpu.usage", map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "nginx"})
			if p.Value != 0.012847391 {
				t.Errorf("container.cpu.usage nginx = %v", p.Value)
			}
			p = one(t, pts, "k8s.pod.status.phase", map[string]string{"k8s.pod.name": "report-29400000-7xk2p", "k8s.pod.status.phase": "Succeeded"})
			if p.Value != 1 || p.Unit != "{pod}" || p.Type != "sum" || p.Monotonic {
				t.Errorf("k8s.pod.status.phase = %+v, want non-monotonic sum 1 {pod}", p)
			}
			p = one(t, pts, "k8s.container.restart.count", map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "log-shipper"})
			if p.Value != 7 || p.Unit != "{restart}" {
				t.Errorf("k8s.container.restart.count = %+v", p)
			}
			p = one(t, pts, "k8s.node.condition.status", map[string]string{"k8s.node.condition.type": "Ready", "k8s.node.condition.status": "true"})
			if p.Value != 1 || p.Resource["k8s.node.name"] != "node-1" {
				t.Errorf("k8s.node.condition.status Ready = %+v", p)
			}
			p = one(t, pts, "k8s.node.cpu.allocatable", nil)
			if p.Value != 3.92 || p.Unit != "{cpu}" {
				t.Errorf("k8s.node.cpu.allocatable = %+v", p)
			}
			p = one(t, pts, "fleetagent.otlpexport.exports", map[string]string{"result": "success"})
			if p.Value != 0 {
				t.Errorf("self-metric counts the export in progress: %+v", p)
			}
			if s := e.prov.Stats(); s.Exports != 1 || s.Failures != 0 || s.LastDataPoints != len(pts) || s.Protocol != protocol {
				t.Errorf("stats = %+v, want 1 export of %d points over %s", s, len(pts), protocol)
			}
		})
	}
}

// TestDeletedPodSeriesDisappear: after a pod is deleted (from the informer
// view and the kubelet), the next export carries none of its series.
func TestDeletedPodSeriesDisappear(t *testing.T) {
	e := setup(t, ProtocolGRPC, Config{})
	ctx := context.Background()
	if err := e.prov.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	victim := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde"}
	before := countMatching(e.recv.Last(), victim)
	if before == 0 {
		t.Fatal("web pod not exported")
	}
	e.state.DeletePod("web-5d8f7c6b9-abcde")
	if err := e.kubelet.SetPods(podValues(e.state.Pods())); err != nil {
		t.Fatal(err)
	}
	if err := e.prov.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	last := e.recv.Last()
	if n := countMatching(last, victim); n != 0 {
		t.Errorf("deleted pod still has %d series in the next export (had %d)", n, before)
	}
	if countMatching(last, map[string]string{"k8s.pod.name": "postgres-0"}) == 0 {
		t.Error("other pods disappeared too")
	}
}

// countMatching counts the points whose attributes, or their resource's,
// include match.
func countMatching(pts []otlpreceiver.Point, match map[string]string) int {
	n := 0
	for _, p := range pts {
		ok := true
		for k, v := range match {
			if p.Get(k) != v {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

var fastRetry = Retry{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond, MaxElapsedTime: 10 * time.Second}

// TestRetryThenResume: a refusing collector gets retries with backoff, and
// the same export succeeds once it accepts again.
func TestRetryThenResume(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol string
		failure  otlpreceiver.Failure
	}{
		{"grpc unavailable", ProtocolGRPC, otlpreceiver.Failure{GRPCCode: codes.Unavailable}},
		{"grpc resource exhausted with retry info", ProtocolGRPC, otlpreceiver.Failure{GRPCCode: codes.ResourceExhausted, RetryAfter: 10 * time.Millisecond}},
		{"http 429", ProtocolHTTPProtobuf, otlpreceiver.Failure{HTTPStatus: http.StatusTooManyRequests, RetryAfter: time.Second}},
		{"http 503", ProtocolHTTPProtobuf, otlpreceiver.Failure{HTTPStatus: http.StatusServiceUnavailable}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, tc.protocol, Config{Retry: fastRetry})
			e.recv.SetFailure(tc.failure)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- e.prov.ForceFlush(ctx) }()
			if err := e.recv.WaitRefused(ctx, 2); err != nil {
				t.Fatalf("exporter did not retry: %v", err)
			}
			e.recv.SetFailure(otlpreceiver.Failure{})
			if err := <-done; err != nil {
				t.Fatalf("export did not resume after the receiver accepted again: %v", err)
			}
			if s := e.recv.Stats(); s.Accepted != 1 || s.Refused < 2 {
				t.Errorf("receiver stats = %+v, want >=2 refused then 1 accepted", s)
			}
			if s := e.prov.Stats(); s.Exports != 1 || s.Failures != 0 {
				t.Errorf("provider stats = %+v", s)
			}
			// The retry sends what the first attempt would have: each
			// pod's points on the pod's resource. On HTTP a retry used
			// to regroup the encoded points again, after the first
			// attempt had taken their entity handles off, and sent
			// them all on the node's resource.
			all := otlpreceiver.Find(e.recv.Exports()[0].Points, "k8s.pod.cpu.usage", nil)
			pod := otlpreceiver.Find(all, "k8s.pod.cpu.usage", map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde"})
			if len(all) == 0 || len(pod) != 1 {
				t.Fatalf("after the retries %d of %d k8s.pod.cpu.usage points carry the pod; want 1", len(pod), len(all))
			}
			for _, p := range all {
				if p.Resource["k8s.pod.uid"] == "" || len(p.Attrs) != 0 {
					t.Fatalf("a pod's point went out with resource %v and attributes %v", p.Resource, p.Attrs)
				}
			}
		})
	}
}

// TestRetriesAreBounded: a collector that keeps refusing fails the export
// after MaxElapsedTime, counted as one failure; permanent errors are not
// retried at all.
func TestRetriesAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name        string
		protocol    string
		failure     otlpreceiver.Failure
		wantRetries bool
	}{
		{"grpc unavailable", ProtocolGRPC, otlpreceiver.Failure{GRPCCode: codes.Unavailable}, true},
		{"grpc resource exhausted without retry info", ProtocolGRPC, otlpreceiver.Failure{GRPCCode: codes.ResourceExhausted}, false},
		{"grpc invalid argument", ProtocolGRPC, otlpreceiver.Failure{GRPCCode: codes.InvalidArgument}, false},
		{"http 503", ProtocolHTTPProtobuf, otlpreceiver.Failure{HTTPStatus: http.StatusServiceUnavailable}, true},
		{"http 400", ProtocolHTTPProtobuf, otlpreceiver.Failure{HTTPStatus: http.StatusBadRequest}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var exportErrs []error
			var mu sync.Mutex
			e := setup(t, tc.protocol, Config{
				// MaxElapsedTime leaves room for a second attempt even when the first
				// is slow (a loaded CI machine under -race took over 200 ms for it).
				Retry:    Retry{InitialInterval: 5 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxElapsedTime: 3 * time.Second},
				OnExport: func(err error) { mu.Lock(); exportErrs = append(exportErrs, err); mu.Unlock() },
			})
			e.recv.SetFailure(tc.failure)
			err := e.prov.ForceFlush(context.Background())
			if err == nil {
				t.Fatal("export succeeded against a refusing receiver")
			}
			refused := e.recv.Stats().Refused
			if tc.wantRetries && refused < 2 {
				t.Errorf("refused %d times, want retries", refused)
			}
			if !tc.wantRetries && refused != 1 {
				t.Errorf("refused %d times, want exactly one attempt (not retryable)", refused)
			}
			s := e.prov.Stats()
			if s.Failures != 1 || s.Exports != 0 || s.LastError == "" {
				t.Errorf("stats = %+v, want one failure with its error", s)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(exportErrs) != 1 || exportErrs[0] == nil {
				t.Errorf("OnExport saw %v, want one error", exportErrs)
			}
			t.Logf("%s: %d attempts, error: %v", tc.name, refused, err)
		})
	}
}

// TestMemoryBoundedWhileDown keeps the receiver down for 40 export
// intervals driven by the periodic reader, then brings it back: no failed
// export carries more points than the current state has (nothing
// accumulates), the live heap does not grow, and export resumes with current
// state only.
func TestMemoryBoundedWhileDown(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			type attempt struct {
				err    error
				points int
				heap   uint64 // live heap after GC, measured when down
			}
			var measuring atomic.Bool
			var prov *Provider
			results := make(chan attempt, 1000)
			e := setup(t, protocol, Config{
				Interval: 20 * time.Millisecond,
				Timeout:  10 * time.Second,
				Retry:    Retry{InitialInterval: 2 * time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxElapsedTime: 10 * time.Millisecond},
				// OnExport runs on the reader's goroutine between two
				// collections, so the heap measured here holds no batch in
				// flight: only what survives from one export to the next.
				OnExport: func(err error) {
					a := attempt{err: err}
					if measuring.Load() {
						a.points = prov.Stats().LastDataPoints
						a.heap = heapAfterGC()
					}
					select {
					case results <- a:
					default:
					}
				},
			}, func(p *Provider) { prov = p })
			// 50 more pods, so a backlog would be obvious.
			e.state.Grow(50)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// The second export after grow was collected after it.
			if err := e.recv.WaitAccepted(ctx, e.recv.Stats().Accepted+2); err != nil {
				t.Fatal(err)
			}
			pointsUp := len(e.recv.Last())
			measuring.Store(true)
			e.recv.Down()

			const intervals = 40
			var heaps []uint64
			for failures := 0; failures < intervals; {
				select {
				case a := <-results:
					if a.err == nil || a.heap == 0 {
						continue // an export from before Down
					}
					failures++
					if a.points > pointsUp {
						t.Fatalf("failed export %d carried %d points, more than the %d of current state: something accumulates", failures, a.points, pointsUp)
					}
					heaps = append(heaps, a.heap)
				case <-ctx.Done():
					t.Fatalf("only %d failed exports while down", failures)
				}
			}
			measuring.Store(false)
			early, late := heaps[4], heaps[intervals-1]
			growth := int64(late) - int64(early)
			t.Logf("%s: %d points per export; live heap after failed export 5: %d B, after %d: %d B (growth %d B)",
				protocol, pointsUp, early, intervals, late, growth)
			// 35 accumulated batches of this size would be several MiB; the
			// bound leaves room for runtime noise only.
			if growth > 256<<10 {
				t.Errorf("heap grew by %d B over %d failed exports: %v", growth, intervals-5, heaps)
			}

			before := e.recv.Stats().Accepted
			if err := e.recv.Up(); err != nil {
				t.Fatal(err)
			}
			if err := e.recv.WaitAccepted(ctx, before+1); err != nil {
				t.Fatalf("export did not resume: %v", err)
			}
			if n := len(e.recv.Last()); n > pointsUp {
				t.Errorf("first export after recovery has %d points, more than the %d of current state: a backlog was sent", n, pointsUp)
			}
			if s := e.prov.Stats(); s.Failures < intervals {
				t.Errorf("stats = %+v, want >= %d failures counted", s, intervals)
			}
		})
	}
}

func drain(c chan error) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(context.Background(), Config{Protocol: "http/json"}); err == nil || !strings.Contains(err.Error(), "use grpc or http/protobuf") {
		t.Errorf("http/json: err = %v", err)
	}
	_, err := New(context.Background(), Config{Getenv: func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "thrift"}[k]
	}})
	if err == nil || !strings.Contains(err.Error(), `"thrift"`) {
		t.Errorf("the metrics-specific protocol variable must win: err = %v", err)
	}
	err = Config{Protocol: "x", Interval: -1, Retry: Retry{MaxInterval: -1}}.Validate()
	for _, want := range []string{`"x"`, "must not be negative", "retry intervals"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %s", err, want)
		}
	}
}

func TestShutdownIdempotent(t *testing.T) {
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
	p, err := New(context.Background(), Config{Protocol: ProtocolGRPC, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	first := p.Shutdown(context.Background())
	if first != nil || recv.Stats().Accepted != 1 {
		t.Errorf("Shutdown = %v with %d final exports, want nil and one final flush", first, recv.Stats().Accepted)
	}
	if second := p.Shutdown(context.Background()); fmt.Sprint(first) != fmt.Sprint(second) {
		t.Errorf("second Shutdown = %v, first = %v", second, first)
	}
	var nilp *Provider
	if err := nilp.Shutdown(context.Background()); err != nil {
		t.Errorf("nil provider Shutdown = %v", err)
	}
}

// TestDeltaTemporalityFromEnv: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
// is read by the exporter itself; with delta, counters arrive as deltas
// between collections (the recorded kubelet counters do not move, so 0),
// and gauges are unchanged.
func TestDeltaTemporalityFromEnv(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
	e := setup(t, ProtocolGRPC, Config{})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := e.prov.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	match := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "network.io.direction": "transmit"}
	first := one(t, e.recv.Exports()[0].Points, "k8s.pod.network.io", match)
	second := one(t, e.recv.Exports()[1].Points, "k8s.pod.network.io", match)
	if first.Cumulative || second.Cumulative || first.Value != 2345678901 || second.Value != 0 {
		t.Errorf("delta network.io = %+v then %+v, want delta 2345678901 then 0", first, second)
	}
	if g := one(t, e.recv.Last(), "k8s.pod.cpu.usage", map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde"}); g.Value != 0.017349508 {
		t.Errorf("gauge under delta = %v", g.Value)
	}
}

// TestSentRequestsAndBytes: the exporter counts every request it sends,
// retries included, and their bytes as the receiver read them off the
// connection, over gRPC and HTTP.
func TestSentRequestsAndBytes(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		failure  otlpreceiver.Failure
	}{
		{ProtocolGRPC, otlpreceiver.Failure{GRPCCode: codes.Unavailable}},
		{ProtocolHTTPProtobuf, otlpreceiver.Failure{HTTPStatus: http.StatusServiceUnavailable}},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			e := setup(t, tc.protocol, Config{Retry: fastRetry})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for range 2 {
				if err := e.prov.ForceFlush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			wire := 0
			for _, x := range e.recv.Exports() {
				wire += x.WireBytes
			}
			if s := e.prov.Stats(); s.SentRequests != 2 || s.SentBytes != uint64(wire) || wire == 0 {
				t.Fatalf("after 2 exports: %d requests and %d bytes counted; the receiver read 2 and %d bytes", s.SentRequests, s.SentBytes, wire)
			}
			// One refused attempt, then its retry: both are requests sent.
			e.recv.SetFailure(tc.failure)
			done := make(chan error, 1)
			go func() { done <- e.prov.ForceFlush(ctx) }()
			if err := e.recv.WaitRefused(ctx, 1); err != nil {
				t.Fatal(err)
			}
			e.recv.SetFailure(otlpreceiver.Failure{})
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			rs, s := e.recv.Stats(), e.prov.Stats()
			if s.SentRequests != uint64(rs.Accepted+rs.Refused) || rs.Refused == 0 {
				t.Fatalf("%d requests counted; the receiver accepted %d and refused %d", s.SentRequests, rs.Accepted, rs.Refused)
			}
			last := e.recv.Exports()[2].WireBytes
			if s.SentBytes <= uint64(wire+last) {
				t.Fatalf("%d bytes counted; the accepted requests alone were %d, and the refused ones were sent too", s.SentBytes, wire+last)
			}
		})
	}
	// An export sent over gRPC in parts (here above 4 KiB a part): each
	// part is a request of its own.
	t.Run("grpc in parts", func(t *testing.T) {
		e := setup(t, ProtocolGRPC, Config{Retry: fastRetry}, func(p *Provider) { p.split.maxGRPCBytes = 4096 })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.prov.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
		parts, wire := e.recv.Exports(), 0
		for _, x := range parts {
			wire += x.WireBytes
		}
		if s := e.prov.Stats(); len(parts) < 2 || s.SentRequests != uint64(len(parts)) || s.SentBytes != uint64(wire) {
			t.Fatalf("one export in %d parts of %d bytes: %d requests and %d bytes counted", len(parts), wire, s.SentRequests, s.SentBytes)
		}
	})
}

// TestSentNothingWhileCollectorDown: an export to a port nothing listens on
// writes no request, and none is counted (the counters first counted each
// attempt as it began, connection or not).
func TestSentNothingWhileCollectorDown(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := lis.Addr().String()
			_ = lis.Close()
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
			p, err := New(context.Background(), Config{Protocol: protocol, NodeName: "n", Interval: time.Hour, Retry: Retry{Disabled: true},
				EntityKeys: collector.IsResourceAttribute})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
			c, err := p.Meter("m").Int64Counter("c")
			if err != nil {
				t.Fatal(err)
			}
			c.Add(context.Background(), 1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.ForceFlush(ctx); err == nil {
				t.Fatal("an export to a closed port succeeded")
			}
			if s := p.Stats(); s.SentRequests != 0 || s.SentBytes != 0 {
				t.Fatalf("nothing reached a connection, yet %d requests and %d bytes were counted", s.SentRequests, s.SentBytes)
			}
		})
	}
}
