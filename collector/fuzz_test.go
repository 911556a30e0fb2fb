package collector

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

// bodyTransport answers every request with one fixed body, so the fuzzer
// drives the kubelet client's whole response path (status, size limit,
// decode) without a socket per input.
type bodyTransport struct {
	body   []byte
	length int64 // Content-Length as the server declared it; -1 unknown
}

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b.body)),
		ContentLength: b.length,
		Request:       r,
	}, nil
}

// countingRecorder checks every observation the kubelet collector makes.
type countingRecorder struct {
	t *testing.T
	n int
}

func (c *countingRecorder) Record(d *Desc, v float64, _ ...attribute.KeyValue) {
	c.n++
	if d == nil {
		c.t.Fatal("recorded with a nil Desc")
	}
	if math.IsNaN(v) {
		c.t.Fatalf("%s: NaN from a summary whose numbers are unsigned integers", d.Name)
	}
}

// FuzzKubeletSummary feeds arbitrary /stats/summary bodies through the
// kubelet client and collector: whatever the kubelet (or something
// pretending to be it) answers, a scrape returns an error or a summary,
// never panics, never accepts a body over the limit, and a summary that
// decodes is recorded without panicking on missing sections.
func FuzzKubeletSummary(f *testing.F) {
	for _, name := range []string{"summary.json", "summary-sparse.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
		f.Add(b[:len(b)/2], false) // truncated
	}
	f.Add([]byte(`{}`), true)
	f.Add([]byte(`null`), true)
	f.Add([]byte(`{"node":null,"pods":null}`), true)
	f.Add([]byte(`{"node":{"cpu":{"usageNanoCores":-1}}}`), true)
	f.Add([]byte(`{"pods":[{"podRef":{},"containers":[{}],"network":{"interfaces":[{}]}}]}`), true)
	f.Add([]byte(`{"node":{"memory":{"workingSetBytes":18446744073709551615}}}`), false)
	f.Add([]byte("<html>502 Bad Gateway</html>"), true)

	const max = 64 << 10
	f.Fuzz(func(t *testing.T, body []byte, declareLength bool) {
		length := int64(-1)
		if declareLength {
			length = int64(len(body))
		}
		client, err := NewKubeletClient(KubeletConfig{Endpoint: "http://kubelet.invalid:10250", MaxResponseBytes: max, MinInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		client.client = &http.Client{Transport: bodyTransport{body: body, length: length}}
		rec := &countingRecorder{t: t}
		err = NewKubeletCollector(client, nil, Config{}).Collect(context.Background(), rec)
		st := client.Stats()
		if st.Scrapes != 1 {
			t.Fatalf("scrapes = %d, want 1", st.Scrapes)
		}
		if len(body) > max && err == nil {
			t.Fatalf("a %d-byte body over the %d-byte limit was accepted", len(body), max)
		}
		if err != nil {
			if st.Failures != 1 || st.LastError == "" {
				t.Fatalf("failed scrape not counted: %+v", st)
			}
			if !strings.Contains(err.Error(), "kubelet summary") {
				t.Fatalf("error does not say where it came from: %v", err)
			}
			if rec.n != 0 {
				t.Fatalf("%d observations recorded from a failed scrape", rec.n)
			}
		} else if st.Failures != 0 {
			t.Fatalf("successful scrape counted as a failure: %+v", st)
		}
	})
}
