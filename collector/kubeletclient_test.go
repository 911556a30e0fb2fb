package collector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/testpki"
)

func newCA(t *testing.T, cn string) *testpki.CA {
	t.Helper()
	ca, err := testpki.NewCA(cn)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func serving(t *testing.T, ca *testpki.CA, dns []string, ips []net.IP, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	c, err := ca.Serving(dns, ips, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writePEM writes the certificates as the PEM file a kubelet's kubelet.crt
// or a CA bundle is, and returns its path.
func writePEM(t *testing.T, name string, pemBytes []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	goodToken = "agent-token"
	noRBAC    = "token-without-nodes-stats"
)

// standIn is an HTTPS kubelet: it serves the recorded summary to goodToken,
// answers 401 to an unknown token and 403 to noRBAC, as a kubelet with
// webhook authentication and authorization does.
func standIn(t *testing.T, cert tls.Certificate) *fakekubelet.Server {
	t.Helper()
	kub, err := fakekubelet.StartWith("testdata/summary.json", "", fakekubelet.Options{
		TLS:    &tls.Config{Certificates: []tls.Certificate{cert}},
		Tokens: map[string]bool{goodToken: true, noRBAC: false},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kub.Close)
	return kub
}

// startTLS serves srv with cert. Handshakes the client refuses are the
// point of several tests: the server does not log them.
func startTLS(t *testing.T, srv *httptest.Server, cert tls.Certificate) {
	t.Helper()
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
}

func tokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func byName(u string) string { return strings.Replace(u, "127.0.0.1", "localhost", 1) }

// TestKubeletTLSModes: each way of verifying a kubelet's serving certificate
// works against a real HTTPS stand-in kubelet, and each way it fails is a
// TLS error that says what to set.
func TestKubeletTLSModes(t *testing.T) {
	cluster := newCA(t, "kubernetes")
	clusterCA := writePEM(t, "ca.crt", testpki.PEM(cluster.Cert))
	// A kubelet with serverTLSBootstrap: signed by the cluster CA, for its
	// hostname and node IP.
	bootstrapped := standIn(t, serving(t, cluster, []string{"node-1"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)))
	// A kubelet that made its own certificate, and its kubelet.crt file.
	self, selfCrt, err := testpki.KubeletSelfSigned("node-1")
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := standIn(t, self)
	kubeletCrt := writePEM(t, "kubelet.crt", selfCrt)
	_, otherCrt, err := testpki.KubeletSelfSigned("node-2")
	if err != nil {
		t.Fatal(err)
	}
	bundle := writePEM(t, "bundle.crt", append(otherCrt, selfCrt...))
	expired := standIn(t, serving(t, cluster, nil, []net.IP{net.ParseIP("127.0.0.1")}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)))
	token := tokenFile(t, goodToken)

	for _, tc := range []struct {
		name     string
		endpoint string
		cfg      KubeletConfig
		wantErr  []string // empty: the scrape succeeds
	}{
		{name: "cluster CA, certificate for the node IP", endpoint: bootstrapped.URL(), cfg: KubeletConfig{CAFile: clusterCA}},
		{name: "kubelet's own certificate, checked for the node name", endpoint: selfSigned.URL(), cfg: KubeletConfig{CAFile: kubeletCrt, ServerName: "node-1"}},
		{name: "bundle of several kubelets' certificates", endpoint: selfSigned.URL(), cfg: KubeletConfig{CAFile: bundle, ServerName: "node-1"}},
		{name: "skip verification", endpoint: selfSigned.URL(), cfg: KubeletConfig{InsecureSkipVerify: true}},
		{name: "kubelet's own certificate dialled by IP", endpoint: selfSigned.URL(), cfg: KubeletConfig{CAFile: kubeletCrt},
			wantErr: []string{"doesn't contain any IP SANs", "--kubelet-tls-server-name"}},
		{name: "cluster CA against a self-signed kubelet", endpoint: selfSigned.URL(), cfg: KubeletConfig{CAFile: clusterCA, ServerName: "node-1"},
			wantErr: []string{"unknown authority", "not signed by a CA in " + clusterCA, "--kubelet-ca-file", "deploy/components/kubelet-ca", "--kubelet-insecure-skip-verify=true"}},
		{name: "system roots against a self-signed kubelet", endpoint: selfSigned.URL(), cfg: KubeletConfig{ServerName: "node-1"},
			wantErr: []string{"unknown authority", "not signed by a CA in the system roots"}},
		{name: "expired certificate", endpoint: expired.URL(), cfg: KubeletConfig{CAFile: clusterCA},
			wantErr: []string{"expired", "renew it"}},
		{name: "name that the certificate lacks", endpoint: byName(bootstrapped.URL()), cfg: KubeletConfig{CAFile: clusterCA},
			wantErr: []string{"not localhost", "--kubelet-tls-server-name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoint, tc.cfg.TokenFile, tc.cfg.MinInterval = tc.endpoint, token, -1
			client, err := NewKubeletClient(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			s, err := client.Summary(context.Background())
			if len(tc.wantErr) == 0 {
				if err != nil || s.Node.NodeName != "node-1" {
					t.Fatalf("summary %v, err %v; want node-1's summary", s, err)
				}
				if client.LastError() != nil || client.LastSuccess().IsZero() {
					t.Errorf("after a success: LastError %v, LastSuccess %v", client.LastError(), client.LastSuccess())
				}
				return
			}
			var ke *KubeletError
			if !errors.As(err, &ke) || ke.Class != KubeletErrTLS {
				t.Fatalf("err %v, want a KubeletError of class tls", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "reachable") {
				t.Errorf("a certificate problem blamed on reachability: %v", err)
			}
			if client.LastError() != ke || !client.LastSuccess().IsZero() {
				t.Errorf("after a failure: LastError %v, LastSuccess %v", client.LastError(), client.LastSuccess())
			}
		})
	}
}

// TestKubeletErrorClasses: each way a kubelet scrape fails is classified,
// and its message says what to fix.
func TestKubeletErrorClasses(t *testing.T) {
	cluster := newCA(t, "kubernetes")
	clusterCA := writePEM(t, "ca.crt", testpki.PEM(cluster.Cert))
	cert := serving(t, cluster, nil, []net.IP{net.ParseIP("127.0.0.1")}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	kubelet := standIn(t, cert)

	// A port where nothing listens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "https://" + l.Addr().String()
	l.Close()

	// A port that accepts connections and never answers, as a kubelet
	// behind a full accept queue or a stalled process.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	t.Cleanup(func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	})

	// hang answers nothing before the test ends. A handler that returned
	// when its request's context ended once answered an empty 200 that the
	// client read within its timeout (a clean run's CI under load: class
	// bad_response, "decode 0 bytes", instead of timeout).
	hangDone := make(chan struct{})
	hang := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hangDone }))
	startTLS(t, hang, cert)
	t.Cleanup(func() { close(hangDone) }) // before hang.Close, which waits for the handler
	notJSON := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
	}))
	startTLS(t, notJSON, cert)
	failing := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "failed to get node info", http.StatusInternalServerError)
	}))
	startTLS(t, failing, cert)
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)

	for _, tc := range []struct {
		name     string
		endpoint string
		token    string
		timeout  time.Duration
		class    KubeletErrorClass
		want     []string
	}{
		{"401: token not accepted", kubelet.URL(), "stale-token", 0, KubeletErrUnauthorized,
			[]string{"HTTP 401", "did not accept the agent's token", "--kubelet-token-file", "webhook authentication"}},
		{"403: no nodes/stats", kubelet.URL(), noRBAC, 0, KubeletErrForbidden,
			[]string{"HTTP 403", "subresource(s)=[stats]", "RBAC get on nodes/stats", "deploy/base/rbac.yaml"}},
		{"connection refused", refused, goodToken, 0, KubeletErrRefused,
			[]string{"connection refused", "nothing listens at " + strings.TrimPrefix(refused, "https://"), "--kubelet-endpoint"}},
		{"accepted, never answered", "https://" + silent.Addr().String(), goodToken, 200 * time.Millisecond, KubeletErrTimeout,
			[]string{"within 200ms", "NetworkPolicy"}},
		{"answer slower than the timeout", hang.URL, goodToken, 200 * time.Millisecond, KubeletErrTimeout,
			[]string{"context deadline exceeded", "within 200ms"}},
		{"not a summary", notJSON.URL, goodToken, 0, KubeletErrBadResponse,
			[]string{"decode", "not a kubelet summary"}},
		{"HTTP 500", failing.URL, goodToken, 0, KubeletErrHTTPStatus,
			[]string{"HTTP 500", "failed to get node info", "kubelet's log"}},
		{"plain HTTP port dialled with https", "https://" + strings.TrimPrefix(plain.URL, "http://"), goodToken, 0, KubeletErrTLS,
			[]string{"does not speak TLS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := NewKubeletClient(KubeletConfig{Endpoint: tc.endpoint, CAFile: clusterCA, TokenFile: tokenFile(t, tc.token),
				Timeout: tc.timeout, MinInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			_, err = client.Summary(context.Background())
			var ke *KubeletError
			if !errors.As(err, &ke) || ke.Class != tc.class {
				t.Fatalf("err %v (class %v), want class %s", err, classOf(err), tc.class)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if got := client.LastError(); got == nil || got.Class != tc.class {
				t.Errorf("LastError() = %v, want class %s", got, tc.class)
			}
		})
	}
}

func classOf(err error) KubeletErrorClass {
	var ke *KubeletError
	if errors.As(err, &ke) {
		return ke.Class
	}
	return "<not a KubeletError>"
}

// TestNewKubeletClientChecksFiles: the CA and token files are read when the
// client is built, every problem reported at once with what to do, so the
// agent can refuse to start instead of failing every scrape.
func TestNewKubeletClientChecksFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	empty := filepath.Join(dir, "token")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		cfg  KubeletConfig
		want []string // one per problem
	}{
		{KubeletConfig{CAFile: missing, TokenFile: missing},
			[]string{`kubelet CA file "` + missing + `" cannot be read (no such file or directory)`, `kubelet token file "` + missing + `" cannot be read`}},
		{KubeletConfig{CAFile: notPEM, TokenFile: empty},
			[]string{`kubelet CA file "` + notPEM + `" holds no PEM certificate`, `kubelet token file "` + empty + `" is empty`}},
		{KubeletConfig{CAFile: notPEM, InsecureSkipVerify: true, ServerName: "node-1"},
			[]string{`CA file "` + notPEM + `" and skipping certificate verification exclude each other`, `server name "node-1" and skipping certificate verification exclude each other`}},
	} {
		tc.cfg.Endpoint = "https://127.0.0.1:10250"
		_, err := NewKubeletClient(tc.cfg)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %v does not say %q", tc.cfg, err, w)
			}
		}
		if err != nil && strings.Count(err.Error(), "\n")+1 != len(tc.want) {
			t.Errorf("want one line per problem (%d), got:\n%v", len(tc.want), err)
		}
	}
}

// TestKubeletHealthAPI: LastSuccess and LastError follow the scrapes (a
// reused summary changes neither), and fleetagent.collector.kubelet.up says
// 1, or 0 with the error class.
func TestKubeletHealthAPI(t *testing.T) {
	cluster := newCA(t, "kubernetes")
	kubelet := standIn(t, serving(t, cluster, nil, []net.IP{net.ParseIP("127.0.0.1")}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)))
	token := tokenFile(t, goodToken)
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	client, err := NewKubeletClient(KubeletConfig{Endpoint: kubelet.URL(), CAFile: writePEM(t, "ca.crt", testpki.PEM(cluster.Cert)), TokenFile: token, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	// The self-metrics alone: collecting them does not scrape.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	if err := client.RegisterMetrics(mp.Meter("self")); err != nil {
		t.Fatal(err)
	}
	if got := kubeletUp(t, reader); got != "" {
		t.Errorf("before any scrape: up = %s, want no point", got)
	}
	if !client.LastSuccess().IsZero() || client.LastError() != nil {
		t.Fatalf("before any scrape: LastSuccess %v, LastError %v", client.LastSuccess(), client.LastError())
	}
	if _, err := client.Summary(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := kubeletUp(t, reader); got != "1 {}" {
		t.Errorf("after a good scrape: up = %s, want 1", got)
	}
	first := clk.Now()
	if client.LastSuccess() != first || client.LastError() != nil {
		t.Errorf("after a good scrape: LastSuccess %v (want %v), LastError %v", client.LastSuccess(), first, client.LastError())
	}

	// The kubelet starts rejecting the token.
	kubelet.SetStatus(http.StatusUnauthorized)
	clk.SetTime(first.Add(2 * time.Second)) // within MinInterval: reused
	if _, err := client.Summary(context.Background()); err != nil || client.LastError() != nil {
		t.Fatalf("reused summary: err %v, LastError %v", err, client.LastError())
	}
	clk.SetTime(first.Add(time.Minute))
	if _, err := client.Summary(context.Background()); err == nil {
		t.Fatal("scrape with a revoked token succeeded")
	}
	if e := client.LastError(); e == nil || e.Class != KubeletErrUnauthorized || client.LastSuccess() != first {
		t.Errorf("after a failed scrape: LastError %v, LastSuccess %v (want %v)", e, client.LastSuccess(), first)
	}
	if got := kubeletUp(t, reader); got != `0 {error.type="unauthorized"}` {
		t.Errorf("after a 401: up = %s", got)
	}
}

// kubeletUp collects once and renders fleetagent.collector.kubelet.up as
// "value {attributes}", or "" when it has no point.
func kubeletUp(t *testing.T, r *sdkmetric.ManualReader) string {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "fleetagent.collector.kubelet.up" {
				continue
			}
			g, ok := m.Data.(metricdata.Gauge[int64])
			if !ok || len(g.DataPoints) != 1 {
				t.Fatalf("fleetagent.collector.kubelet.up: %#v", m.Data)
			}
			return fmt.Sprintf("%d {%s}", g.DataPoints[0].Value, attrString(g.DataPoints[0].Attributes))
		}
	}
	return ""
}
