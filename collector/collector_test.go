package collector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/testpki"
)

// serveFile serves the /stats/summary recorded at path from the stand-in
// kubelet until the test ends.
func serveFile(t *testing.T, path string) *fakekubelet.Server {
	t.Helper()
	kub, err := fakekubelet.Start(path, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kub.Close)
	return kub
}

func newTestKubeletCollector(t *testing.T, cfg KubeletConfig, state KubeState) (Collector, *KubeletClient) {
	t.Helper()
	client, err := NewKubeletClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return NewKubeletCollector(client, state, testConfig), client
}

func TestPodCollectorGolden(t *testing.T) {
	p := newPipeline(t, []Collector{NewPodCollector(loadState(t), testConfig)})
	golden(t, "pod.golden", render(p.collect(t)))
}

func TestNodeCollectorGolden(t *testing.T) {
	p := newPipeline(t, []Collector{NewNodeCollector(loadState(t))})
	golden(t, "node.golden", render(p.collect(t)))
}

func TestKubeletCollectorGolden(t *testing.T) {
	for _, tc := range []struct{ fixture, golden string }{
		{"testdata/summary.json", "kubelet.golden"},
		{"testdata/summary-sparse.json", "kubelet-sparse.golden"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			srv := serveFile(t, tc.fixture)
			c, client := newTestKubeletCollector(t, KubeletConfig{Endpoint: srv.URL()}, loadState(t))
			p := newPipeline(t, []Collector{c})
			golden(t, tc.golden, render(p.collect(t)))
			if st := client.Stats(); st.Scrapes != 1 || st.Failures != 0 {
				t.Errorf("kubelet client stats = %+v, want 1 scrape and 0 failures", st)
			}
		})
	}
}

// defaultOnFixtures is Default's collectors on the recorded state, with a
// stand-in kubelet serving the recorded summary, and their Config.
func defaultOnFixtures(t *testing.T) ([]Collector, Config) {
	t.Helper()
	srv := serveFile(t, "testdata/summary.json")
	cfg := testConfig
	cfg.Kubelet = KubeletConfig{Endpoint: srv.URL()}
	cs, err := Default(cfg, loadState(t))
	if err != nil {
		t.Fatal(err)
	}
	return cs, cfg
}

// TestDefaultGolden runs the one list of collectors together, as the agent
// does, and checks the union is exactly the per-collector goldens.
func TestDefaultGolden(t *testing.T) {
	cs, cfg := defaultOnFixtures(t)
	var names []string
	for _, c := range cs {
		names = append(names, c.Name())
	}
	if got := strings.Join(names, ","); got != "pod,node,kubelet" {
		t.Fatalf("Default collectors = %s, want pod,node,kubelet", got)
	}
	got := render(newPipeline(t, cs).collect(t))
	want := defaultGoldens(t)
	if sortedLines(got) != sortedLines(want) {
		t.Errorf("Default output is not the union of the collector goldens:\n%s", diff(sortedLines(want), sortedLines(got)))
	}

	cfg.Kubelet = KubeletConfig{}
	cs, err := Default(cfg, loadState(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Errorf("Default without a kubelet endpoint has %d collectors, want 2 (pod, node)", len(cs))
	}
}

func sortedLines(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j] < ls[j-1]; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
	return strings.Join(ls, "\n")
}

// TestKubeletFailuresAreIsolated: every way a kubelet response can go wrong
// fails the kubelet collector with a clear error and a failed-scrape count,
// while the pod and node collectors still report.
func TestKubeletFailuresAreIsolated(t *testing.T) {
	valid, err := os.ReadFile("testdata/summary.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     KubeletConfig
		handler http.HandlerFunc
		wantErr string
	}{
		{name: "http 500", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "internal error", http.StatusInternalServerError)
		}, wantErr: "HTTP 500"},
		{name: "forbidden", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "Forbidden (user=system:serviceaccount:x:y, verb=get, resource=nodes, subresource=stats)", http.StatusForbidden)
		}, wantErr: "RBAC get on nodes/stats"},
		{name: "malformed json", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(valid[:len(valid)/2])
		}, wantErr: "decode"},
		{name: "wrong shape", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"node": "not an object"}`))
		}, wantErr: "decode"},
		{name: "oversized with content-length", cfg: KubeletConfig{MaxResponseBytes: 1024}, handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(valid)
		}, wantErr: "exceeds the 1024-byte limit"},
		{name: "oversized chunked", cfg: KubeletConfig{MaxResponseBytes: 1024}, handler: func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(valid); i += 512 {
				_, _ = w.Write(valid[i:min(i+512, len(valid))])
				w.(http.Flusher).Flush()
			}
		}, wantErr: "exceeds the 1024-byte limit"},
		{name: "timeout", cfg: KubeletConfig{Timeout: 50 * time.Millisecond}, handler: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // hang until the client gives up
		}, wantErr: "context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			tc.cfg.Endpoint = srv.URL
			state := loadState(t)
			kc, client := newTestKubeletCollector(t, tc.cfg, state)
			p := newPipeline(t, []Collector{NewPodCollector(state, testConfig), NewNodeCollector(state), kc})
			out := render(p.collect(t))

			if !strings.Contains(out, "# k8s.pod.status.phase ") || !strings.Contains(out, "# k8s.node.condition.status ") {
				t.Errorf("pod/node metrics missing when the kubelet fails:\n%s", out)
			}
			if strings.Contains(out, "k8s.pod.cpu.usage") {
				t.Errorf("kubelet metrics reported from a failed scrape")
			}
			st := p.runner.Stats()
			if st["kubelet"].Failures != 1 || !strings.Contains(st["kubelet"].LastError, tc.wantErr) {
				t.Errorf("kubelet stats = %+v, want 1 failure with %q", st["kubelet"], tc.wantErr)
			}
			if st["pod"].Successes != 1 || st["node"].Successes != 1 {
				t.Errorf("pod/node stats = %+v / %+v, want one success each", st["pod"], st["node"])
			}
			if cs := client.Stats(); cs.Failures != 1 || cs.Scrapes != 1 {
				t.Errorf("kubelet client stats = %+v, want 1 scrape, 1 failure", cs)
			}
		})
	}
}

// TestKubeletHTTPSWithTokenAndCA uses the in-cluster path: HTTPS verified
// against a CA file, bearer token from a file that rotates.
func TestKubeletHTTPSWithTokenAndCA(t *testing.T) {
	srv, err := fakekubelet.StartWith("testdata/summary.json", "", fakekubelet.Options{TLS: &tls.Config{}, Tokens: map[string]bool{"token-1": true}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	caFile, tokenFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	if err := os.WriteFile(caFile, testpki.PEM(srv.Certificate()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := NewKubeletClient(KubeletConfig{Endpoint: srv.URL(), CAFile: caFile, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Node.NodeName != "node-1" || len(s.Pods) != 4 {
		t.Errorf("summary node=%q pods=%d, want node-1 and 4", s.Node.NodeName, len(s.Pods))
	}

	// Without the CA the kubelet's certificate is not trusted.
	untrusted, err := NewKubeletClient(KubeletConfig{Endpoint: srv.URL(), TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusted.Summary(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("summary without CA: err = %v, want a certificate error", err)
	}

	// A wrong token is an authorization failure with a hint.
	if err := os.WriteFile(tokenFile, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong, err := NewKubeletClient(KubeletConfig{Endpoint: srv.URL(), CAFile: caFile, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Summary(context.Background()); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("summary with a wrong token: err = %v, want HTTP 401", err)
	}
}

type panicky struct{}

func (panicky) Name() string      { return "panicky" }
func (panicky) Describe() []*Desc { return nil }
func (panicky) Collect(context.Context, Recorder) error {
	panic("boom")
}

type failing struct{ err error }

func (f failing) Name() string      { return "failing" }
func (f failing) Describe() []*Desc { return []*Desc{NodeCPUUsage} }
func (f failing) Collect(_ context.Context, r Recorder) error {
	r.Record(NodeCPUUsage, 1.5)
	return f.err
}

// sleepy advances a fake clock while collecting, standing in for a slow source.
type sleepy struct {
	clock *testingclock.FakePassiveClock
}

func (s sleepy) Name() string      { return "sleepy" }
func (s sleepy) Describe() []*Desc { return nil }
func (s sleepy) Collect(context.Context, Recorder) error {
	s.clock.SetTime(s.clock.Now().Add(250 * time.Millisecond))
	return nil
}

func TestRunnerIsolatesAndAccounts(t *testing.T) {
	state := loadState(t)
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	p := newPipeline(t, []Collector{panicky{}, NewNodeCollector(state), failing{errors.New("source broke")}, sleepy{clk}},
		WithClock(clk))
	rm := p.collect(t)
	if out := render(rm); !strings.Contains(out, "k8s.node.condition.status") {
		t.Errorf("node collector did not report after a panicking collector:\n%s", out)
	}
	st := p.runner.Stats()
	if st["panicky"].Failures != 1 || !strings.Contains(st["panicky"].LastError, "panicked: boom") {
		t.Errorf("panicky stats = %+v", st["panicky"])
	}
	if st["failing"].Failures != 1 || st["failing"].LastError != "source broke" {
		t.Errorf("failing stats = %+v", st["failing"])
	}
	if st["node"].Successes != 1 || st["sleepy"].LastDuration != 250*time.Millisecond {
		t.Errorf("node stats = %+v, sleepy = %+v", st["node"], st["sleepy"])
	}
	// Self-metrics carry the same numbers.
	self := selfPoints(rm)
	for k, want := range map[string]float64{
		`fleetagent.collector.runs{collector="panicky",result="failure"}`: 1,
		`fleetagent.collector.runs{collector="node",result="success"}`:    1,
		`fleetagent.collector.runs{collector="node",result="failure"}`:    0,
		`fleetagent.collector.duration{collector="sleepy"}`:               0.25,
	} {
		if got, ok := self[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
}

func selfPoints(rm metricdata.ResourceMetrics) map[string]float64 {
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[fmt.Sprintf("%s{%s}", m.Name, attrString(p.Attributes))] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					out[fmt.Sprintf("%s{%s}", m.Name, attrString(p.Attributes))] = p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[fmt.Sprintf("%s{%s}", m.Name, attrString(p.Attributes))] = float64(p.Value)
				}
			}
		}
	}
	return out
}

func TestNotSyncedIsNoDataNotFailure(t *testing.T) {
	state := loadState(t)
	state.SetSynced(false)
	p := newPipeline(t, []Collector{NewPodCollector(state, testConfig), NewNodeCollector(state)})
	if out := render(p.collect(t)); out != "" {
		t.Errorf("unsynced state reported metrics:\n%s", out)
	}
	for name, st := range p.runner.Stats() {
		if st.Failures != 0 || st.NoData != 1 {
			t.Errorf("%s stats = %+v, want one no-data run and no failure", name, st)
		}
	}
}

// TestDeletedPodSeriesDisappear: asynchronous instruments report only what
// the callback observes, so a deleted pod's series are gone at the next
// collection, for both informer and kubelet collectors.
func TestDeletedPodSeriesDisappear(t *testing.T) {
	state := loadState(t)
	orig, kub := serveMutableSummary(t)
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	kc, client := newTestKubeletCollector(t, KubeletConfig{Endpoint: kub.URL(), Clock: clk}, state)
	p := newPipeline(t, []Collector{NewPodCollector(state, testConfig), kc})

	if out := render(p.collect(t)); !strings.Contains(out, `k8s.pod.name="web-5d8f7c6b9-abcde"`) {
		t.Fatalf("web pod not reported before deletion")
	}
	state.DeletePod("web-5d8f7c6b9-abcde")
	kub.SetBody([]byte(strings.Replace(string(orig), `"name": "web-5d8f7c6b9-abcde"`, `"name": "web-5d8f7c6b9-zzzzz"`, 1)))
	clk.SetTime(clk.Now().Add(DefaultKubeletMinInterval)) // the next export interval
	out := render(p.collect(t))
	if st := client.Stats(); st.Scrapes != 2 {
		t.Errorf("kubelet scrapes = %d, want 2", st.Scrapes)
	}
	if strings.Contains(out, `k8s.pod.name="web-5d8f7c6b9-abcde"`) {
		t.Errorf("deleted pod still reported:\n%s", grep(out, "web-5d8f7c6b9-abcde"))
	}
	if !strings.Contains(out, `k8s.pod.name="postgres-0"`) {
		t.Errorf("other pods no longer reported")
	}
}

// serveMutableSummary serves testdata/summary.json from the stand-in kubelet
// until the test ends; it returns the file's contents (for SetBody) and the
// kubelet.
func serveMutableSummary(t *testing.T) (orig []byte, kub *fakekubelet.Server) {
	t.Helper()
	kub = serveFile(t, "testdata/summary.json")
	orig, err := os.ReadFile("testdata/summary.json")
	if err != nil {
		t.Fatal(err)
	}
	return orig, kub
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestKubeletScrapeReuse: collections closer than MinInterval (one per
// reader of the MeterProvider) share one kubelet scrape; a failed scrape is
// never reused.
func TestKubeletScrapeReuse(t *testing.T) {
	srv := serveFile(t, "testdata/summary.json")
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	client, err := NewKubeletClient(KubeletConfig{Endpoint: srv.URL(), Clock: clk, MinInterval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := client.Summary(ctx); err != nil {
			t.Fatal(err)
		}
		clk.SetTime(clk.Now().Add(4 * time.Second))
	}
	if st := client.Stats(); st.Scrapes != 1 || st.Reused != 2 {
		t.Errorf("within 10s: stats = %+v, want 1 scrape and 2 reuses", st)
	}
	srv.SetStatus(http.StatusServiceUnavailable)
	clk.SetTime(clk.Now().Add(10 * time.Second))
	for i := 0; i < 2; i++ {
		if _, err := client.Summary(ctx); err == nil {
			t.Error("a failed scrape was answered from the old summary")
		}
	}
	if st := client.Stats(); st.Scrapes != 3 || st.Failures != 2 {
		t.Errorf("after failures: stats = %+v, want 3 scrapes, 2 failures", st)
	}

	// Negative MinInterval scrapes every time.
	every, err := NewKubeletClient(KubeletConfig{Endpoint: srv.URL(), Clock: clk, MinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetStatus(http.StatusOK)
	for i := 0; i < 3; i++ {
		if _, err := every.Summary(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := every.Stats(); st.Scrapes != 3 || st.Reused != 0 {
		t.Errorf("MinInterval<0: stats = %+v, want 3 scrapes", st)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	err := Config{PodLabels: []string{""}, Kubelet: KubeletConfig{Endpoint: "ftp://x", Timeout: -1, MaxResponseBytes: -1}}.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"empty key", "must start with https://", "timeout -1ns is negative", "max response bytes -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := testConfig.Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestDuplicateMetricNameRejected(t *testing.T) {
	dup := &Desc{Name: NodeCPUUsage.Name, Unit: "{cpu}", Kind: Gauge, Float: true}
	_, err := NewRunner(newPipelineMeter(t), []Collector{failing{}, describing{dup}})
	if err == nil || !strings.Contains(err.Error(), "described twice") {
		t.Errorf("err = %v, want a duplicate-description error", err)
	}
}

type describing struct{ d *Desc }

func (d describing) Name() string                            { return "describing" }
func (d describing) Describe() []*Desc                       { return []*Desc{d.d} }
func (d describing) Collect(context.Context, Recorder) error { return nil }

// TestMetricsTableIsComplete: the collectors describe exactly the metrics
// of Metrics, each from the collector its Source names.
func TestMetricsTableIsComplete(t *testing.T) {
	inTable := map[*Desc]bool{}
	for _, d := range Metrics {
		if inTable[d] {
			t.Errorf("%s listed twice in Metrics", d.Name)
		}
		inTable[d] = true
	}
	described := map[*Desc]bool{}
	for _, c := range []Collector{NewPodCollector(nil, Config{}), NewNodeCollector(nil), NewKubeletCollector(nil, nil, Config{})} {
		for _, d := range c.Describe() {
			described[d] = true
			if !inTable[d] {
				t.Errorf("collector %s describes %s, which is not in Metrics", c.Name(), d.Name)
			}
			if d.Source != c.Name() {
				t.Errorf("%s: Source %q, described by collector %s", d.Name, d.Source, c.Name())
			}
		}
	}
	for _, d := range Metrics {
		if !described[d] {
			t.Errorf("%s is in Metrics but no collector describes it", d.Name)
		}
	}
}

const (
	tableStart = "<!-- metric table: generated from collector.Metrics by go test ./collector -update -->"
	tableEnd   = "<!-- end of metric table -->"
)

// metricTable renders Metrics as the README's markdown table.
func metricTable() string {
	var b strings.Builder
	b.WriteString("| collector | name | unit | instrument | description |\n|---|---|---|---|---|\n")
	for _, d := range Metrics {
		kind := map[Kind]string{Gauge: "gauge", UpDownCounter: "updowncounter", Counter: "counter"}[d.Kind]
		num := "int"
		if d.Float {
			num = "double"
		}
		fmt.Fprintf(&b, "| %s | `%s` | `%s` | %s %s | %s |\n", d.Source, d.Name, d.Unit, kind, num, d.Description)
	}
	return b.String()
}

// TestReadmeMetricTable keeps the README's metric table the one generated
// from Metrics (go test ./collector -update rewrites it).
func TestReadmeMetricTable(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, tableStart), strings.Index(readme, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q ... %q", tableStart, tableEnd)
	}
	want := readme[:i] + tableStart + "\n" + metricTable() + readme[j:]
	if *update {
		if err := os.WriteFile("README.md", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if readme != want {
		t.Errorf("README.md's metric table is not the one generated from collector.Metrics (run go test ./collector -update):\n%s", diff(readme[i:j], want[i:strings.Index(want, tableEnd)]))
	}
}
