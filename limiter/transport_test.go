package limiter

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/internal/testenv/metricsread"
)

// fakeAPIServer answers pod lists and watches in memory; it records what
// reached it.
type fakeAPIServer struct{ sent chan string }

func (f *fakeAPIServer) RoundTrip(req *http.Request) (*http.Response, error) {
	f.sent <- verbOf(req) + " " + req.URL.Path
	h := http.Header{"Content-Type": {"application/json"}}
	if verbOf(req) == "watch" {
		pr, pw := io.Pipe()
		go func() { <-req.Context().Done(); pw.CloseWithError(req.Context().Err()) }()
		return &http.Response{StatusCode: 200, Header: h, Body: pr, Request: req}, nil
	}
	body := `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}`
	return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
}

// TestInstrumentChargesEachRequestOnce runs a real clientset over an
// in-memory transport: a LIST (throttled by client-go's RateLimiter, then
// seen by the transport) and a WATCH (seen only by the transport) must
// take exactly two tokens.
func TestInstrumentChargesEachRequestOnce(t *testing.T) {
	synctest.Test(t, testInstrumentChargesEachRequestOnce)
}

func testInstrumentChargesEachRequestOnce(t *testing.T) {
	b, clk := newTestBudget(t, Config{FleetQPS: 10, FleetSize: 1, Burst: 5})
	startSpread(b, clk) // bucket full: 5 tokens
	srv := &fakeAPIServer{sent: make(chan string, 10)}
	cfg := &rest.Config{Host: "http://apiserver.invalid", Transport: srv}
	b.Instrument(cfg)
	b.Instrument(cfg) // a second call must not wrap twice
	if _, ok := cfg.RateLimiter.(*clientGoLimiter); !ok {
		t.Fatalf("RateLimiter = %T, want the budget", cfg.RateLimiter)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=n1", ResourceVersion: "0"}); err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=n1", ResourceVersion: "7"})
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{<-srv.sent, <-srv.sent}; got[0] != "list /api/v1/pods" || got[1] != "watch /api/v1/pods" {
		t.Fatalf("sent %v", got)
	}
	if got := b.bucket.lim.TokensAt(clk.Now()); got != 3 {
		t.Errorf("tokens left after a LIST and a WATCH = %v, want 3 (one each)", got)
	}
	b.mu.Lock()
	credits := b.bucket.credits
	b.mu.Unlock()
	if credits != 0 {
		t.Errorf("unused credits = %d, want 0", credits)
	}
	s := b.Stats()
	// Measured: client-go's limiter saw the LIST but not the WATCH's first
	// attempt, which only the transport could charge.
	if s.PaidInClientGo != 1 || s.PaidInTransport != 1 {
		t.Errorf("paid in client-go %d, in the transport %d; want 1 (the LIST) and 1 (the WATCH)", s.PaidInClientGo, s.PaidInTransport)
	}
	if s.Requests["list 200"] != 1 || s.Requests["watch 200"] != 1 || s.WatchesOpen != 1 {
		t.Errorf("stats: requests %v open watches %d", s.Requests, s.WatchesOpen)
	}
	w.Stop()
	synctest.Wait() // the watch's decoder goroutine closes its body
	if n := b.Stats().WatchesOpen; n != 0 {
		t.Errorf("%d watches open after Stop", n)
	}
}

func TestRegisterMetrics(t *testing.T) {
	b, clk := newTestBudget(t, Config{FleetQPS: 50, FleetSize: 100})
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	if err := b.RegisterMetrics(mp.Meter("limiter")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		b.requests.add("list", "200")
	}
	b.requests.add("watch", "429")
	b.observe(clk.Now(), outcomeThrottled, 2*time.Second, false)
	b.setKilled(true)

	got := map[string]float64{}
	for _, m := range metricsread.Collect(t, reader) {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				k := m.Name
				if v, ok := p.Attributes.Value("code"); ok {
					verb, _ := p.Attributes.Value("verb")
					k += "{" + verb.AsString() + " " + v.AsString() + "}"
				}
				if v, ok := p.Attributes.Value("cause"); ok {
					k += "{" + v.AsString() + "}"
				}
				got[k] = float64(p.Value)
			}
		case metricdata.Gauge[int64]:
			got[m.Name] = float64(d.DataPoints[0].Value)
		case metricdata.Gauge[float64]:
			got[m.Name] = d.DataPoints[0].Value
		case metricdata.Sum[float64]:
			got[m.Name] = d.DataPoints[0].Value
		}
	}
	want := map[string]float64{
		"fleetagent.limiter.requests{list 200}":         3,
		"fleetagent.limiter.requests{watch 429}":        1,
		"fleetagent.limiter.rate":                       0.5,
		"fleetagent.limiter.fleet.size":                 100,
		"fleetagent.limiter.backoffs{throttled}":        1,
		"fleetagent.limiter.backoff.active":             1,
		"fleetagent.limiter.breaker.state":              0,
		"fleetagent.limiter.killswitch.active":          1,
		"fleetagent.limiter.watches.open":               0,
		"fleetagent.limiter.tokens.waited":              0,
		"fleetagent.limiter.wait.time":                  0,
		"fleetagent.limiter.breaker.opens":              0,
		"fleetagent.limiter.backoffs{connection_error}": 0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// BenchmarkRoundTripOverhead measures what the budget adds to a request
// that does not have to wait: gate check, token, classification, counting.
func BenchmarkRoundTripOverhead(b *testing.B) {
	bud, err := New(Config{FleetQPS: 1e12, FleetSize: 1, Burst: 1 << 30, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ok := &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}
	rt := &roundTripper{b: bud, next: roundTripFunc(func(*http.Request) (*http.Response, error) { return ok, nil })}
	req, _ := http.NewRequest("GET", "https://api/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dn1&resourceVersion=0", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := rt.RoundTrip(req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/request")
}
