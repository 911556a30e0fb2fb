package collector

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetagent/fleetagent/internal/selfmetrics"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// Defaults of KubeletConfig.
const (
	DefaultKubeletTimeout     = 10 * time.Second
	DefaultKubeletMaxResponse = 16 << 20 // 16 MiB: a 110-pod node's summary is well under 1 MiB
	DefaultKubeletMinInterval = 5 * time.Second
	// DefaultKubeletPodsMinInterval is the shortest time between two GETs
	// of the kubelet's /pods by default: the agent's default collection
	// interval. The kubelet serializes every pod of the node on each call.
	DefaultKubeletPodsMinInterval = 30 * time.Second
	// DefaultTokenFile and DefaultCAFile are the service-account token and
	// cluster CA mounted into every pod.
	DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// KubeletConfig configures the kubelet summary client. The kubelet is
// node-local: the agent never reaches it through the apiserver.
//
// An https endpoint's serving certificate is verified in one of three ways:
// against the CA certificates in CAFile (the cluster CA, or a bundle of the
// kubelets' own self-signed certificates), against the system roots (CAFile
// empty), or not at all (InsecureSkipVerify, which excludes CAFile and
// ServerName).
type KubeletConfig struct {
	// Endpoint is the kubelet's base URL, e.g. https://10.0.0.5:10250 (the
	// node IP from the downward API) or http://127.0.0.1:port in tests.
	Endpoint string
	// TokenFile is a bearer token file (re-read as it rotates); empty means
	// no Authorization header. The agent passes DefaultTokenFile.
	TokenFile string
	// CAFile is a PEM file of the CA certificates the kubelet's serving
	// certificate must chain to; empty means the system roots. The agent
	// passes DefaultCAFile.
	CAFile string
	// ServerName is the name the serving certificate must carry when it is
	// not the endpoint's host. A kubelet that made its own certificate names
	// only its hostname in it, while the agent reaches it by node IP.
	ServerName string
	// InsecureSkipVerify accepts any serving certificate. The agent's token
	// then goes to whoever answers at Endpoint.
	InsecureSkipVerify bool
	// Timeout bounds one scrape (default DefaultKubeletTimeout).
	Timeout time.Duration
	// MaxResponseBytes bounds the response body (default
	// DefaultKubeletMaxResponse); a larger response fails the scrape.
	MaxResponseBytes int64
	// MinInterval is the shortest time between two scrapes: collections
	// closer together (one per MeterProvider reader, e.g. an OTLP export and
	// a Prometheus scrape) reuse the last good summary, so the kubelet load
	// does not grow with the number of readers. Zero means
	// DefaultKubeletMinInterval; negative disables reuse.
	MinInterval time.Duration
	// PodsMinInterval is the shortest time between two GETs of /pods
	// (Pods): calls closer together reuse the last list. Zero means
	// DefaultKubeletPodsMinInterval; negative disables reuse. The agent
	// sets its collection interval.
	PodsMinInterval time.Duration
	// Clock is used for MinInterval and LastSuccess (default the real clock).
	Clock clock.PassiveClock
}

// Validate reports every problem at once. It reads no file: NewKubeletClient
// checks the CA and token files.
func (c KubeletConfig) Validate() error {
	var errs []error
	u, err := url.Parse(c.Endpoint)
	switch {
	case c.Endpoint == "":
		errs = append(errs, errors.New("kubelet: endpoint is empty; set it to https://<node IP>:10250"))
	case err != nil:
		errs = append(errs, fmt.Errorf("kubelet: endpoint %q: %w", c.Endpoint, err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("kubelet: endpoint %q must start with https:// (or http:// for tests)", c.Endpoint))
	}
	if c.InsecureSkipVerify && c.CAFile != "" {
		errs = append(errs, fmt.Errorf("kubelet: CA file %q and skipping certificate verification exclude each other: drop one", c.CAFile))
	}
	if c.InsecureSkipVerify && c.ServerName != "" {
		errs = append(errs, fmt.Errorf("kubelet: server name %q and skipping certificate verification exclude each other: drop one", c.ServerName))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("kubelet: timeout %v is negative", c.Timeout))
	}
	if c.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("kubelet: max response bytes %d is negative", c.MaxResponseBytes))
	}
	return errors.Join(errs...)
}

// checkFiles reads the CA and token files once, so that a missing mount or
// a wrong file is reported when the client is built, with what to do,
// rather than as a failed scrape later.
func (c KubeletConfig) checkFiles() error {
	var errs []error
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("kubelet CA file %q cannot be read (%v): mount the CA bundle there or point --kubelet-ca-file (FLEETAGENT_KUBELET_CA_FILE) at it", c.CAFile, pathErr(err)))
		case !x509.NewCertPool().AppendCertsFromPEM(b):
			errs = append(errs, fmt.Errorf("kubelet CA file %q holds no PEM certificate: it must hold the CA certificates (-----BEGIN CERTIFICATE-----) that sign the kubelets' serving certificates", c.CAFile))
		}
	}
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("kubelet token file %q cannot be read (%v): mount the service-account token (automountServiceAccountToken: true) or point --kubelet-token-file (FLEETAGENT_KUBELET_TOKEN_FILE) at a token, or set it empty to send none", c.TokenFile, pathErr(err)))
		case len(bytes.TrimSpace(b)) == 0:
			errs = append(errs, fmt.Errorf("kubelet token file %q is empty: point --kubelet-token-file at the service-account token", c.TokenFile))
		}
	}
	return errors.Join(errs...)
}

// pathErr drops the path an *fs.PathError repeats.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// KubeletClient fetches /stats/summary from one kubelet.
type KubeletClient struct {
	url     string
	podsURL string
	client  *http.Client
	timeout time.Duration
	max     int64
	minIntv time.Duration
	clock   clock.PassiveClock
	// caSource names what verifies the serving certificate, for error
	// messages: the CA file, "the system roots", or "" (not verified).
	caSource string

	// cacheMu serialises scrapes so concurrent collections share one.
	cacheMu   sync.Mutex
	sumBuf    bytes.Buffer // the summary's body, reused (guarded by cacheMu)
	cached    *Summary
	cachedAt  time.Time
	cacheHits atomic.Uint64

	// pods is the /pods side: its own cache, interval and counts, apart
	// from the summary's scrape health (a refused /pods does not make the
	// kubelet "down" for usage metrics).
	podsMu      sync.Mutex
	podsMinIntv time.Duration
	podsCached  []*corev1.Pod
	podsAt      time.Time
	podsGets    atomic.Uint64
	podsFails   atomic.Uint64
	podsReused  atomic.Uint64
	podsBytes   atomic.Uint64
	podsLastErr atomic.Pointer[KubeletError]

	scrapes  atomic.Uint64
	failures atomic.Uint64
	bytes    atomic.Uint64
	mu       sync.Mutex
	lastErr  string        // the last failure's message, kept after a success (Stats)
	current  *KubeletError // the last scrape's failure; nil after a success
	lastOK   time.Time
}

// KubeletStats is a snapshot of the client's scrape counts.
type KubeletStats struct {
	Scrapes   uint64
	Failures  uint64
	Reused    uint64 // collections served from the last summary (MinInterval)
	LastBytes uint64
	LastError string
}

// NewKubeletClient builds a client from cfg, reading the CA and token files
// once to report a missing or wrong one now, each problem with what to do.
// The transport comes from client-go, which re-reads the token file as the
// kubelet rotates it. It does not contact the kubelet.
func NewKubeletClient(cfg KubeletConfig) (*KubeletClient, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.checkFiles(); err != nil {
		return nil, err
	}
	rc := &rest.Config{
		Host:            cfg.Endpoint,
		BearerTokenFile: cfg.TokenFile,
		TLSClientConfig: rest.TLSClientConfig{CAFile: cfg.CAFile, ServerName: cfg.ServerName, Insecure: cfg.InsecureSkipVerify},
	}
	rt, err := rest.TransportFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubelet client for %s: %w (check the CA file %q and token file %q)", cfg.Endpoint, err, cfg.CAFile, cfg.TokenFile)
	}
	var clk clock.PassiveClock = clock.RealClock{}
	if cfg.Clock != nil {
		clk = cfg.Clock
	}
	caSource := "the system roots"
	switch {
	case cfg.InsecureSkipVerify:
		caSource = ""
	case cfg.CAFile != "":
		caSource = cfg.CAFile
	}
	return &KubeletClient{
		podsURL:     strings.TrimSuffix(cfg.Endpoint, "/") + "/pods",
		podsMinIntv: reuseInterval(cfg.PodsMinInterval, DefaultKubeletPodsMinInterval),
		url:         strings.TrimSuffix(cfg.Endpoint, "/") + "/stats/summary",
		client:      &http.Client{Transport: rt},
		timeout:     defaultDuration(cfg.Timeout, DefaultKubeletTimeout),
		max:         defaultInt(cfg.MaxResponseBytes, DefaultKubeletMaxResponse),
		minIntv:     reuseInterval(cfg.MinInterval, DefaultKubeletMinInterval),
		clock:       clk,
		caSource:    caSource,
	}, nil
}

func defaultInt(v, def int64) int64 {
	if v <= 0 {
		return def
	}
	return v
}

// Summary returns the kubelet's summary: the last good one when it is
// younger than MinInterval, otherwise a fresh scrape. Every failed scrape is
// counted and returned as a *KubeletError that says what failed and what to
// fix. The returned Summary is shared: do not modify it.
func (k *KubeletClient) Summary(ctx context.Context) (*Summary, error) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	now := k.clock.Now()
	if k.cached != nil && k.minIntv > 0 && now.Sub(k.cachedAt) < k.minIntv {
		k.cacheHits.Add(1)
		return k.cached, nil
	}
	s, err := k.scrape(ctx)
	if err != nil {
		return nil, err
	}
	k.cached, k.cachedAt = s, now
	return s, nil
}

func (k *KubeletClient) scrape(ctx context.Context) (*Summary, error) {
	k.scrapes.Add(1)
	s, n, err := k.fetch(ctx)
	k.bytes.Store(uint64(n))
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.failures.Add(1)
		k.lastErr = err.Error()
		k.current = err
		return nil, err
	}
	k.current, k.lastOK = nil, k.clock.Now()
	return s, nil
}

func (k *KubeletClient) fetch(ctx context.Context) (*Summary, int, *KubeletError) {
	var s Summary
	n, err := k.get(ctx, k.url, summaryEndpoint, &k.sumBuf, &s)
	if err != nil {
		return nil, n, err
	}
	return &s, n, nil
}

// kubeletEndpoint names one kubelet path the client reads, for errors.
type kubeletEndpoint struct {
	// what the answer is ("summary", "pods"), the RBAC subresource the
	// kubelet authorizes it as, and the answer named in a decode error.
	what, rbac, noun string
}

var (
	summaryEndpoint = kubeletEndpoint{what: "summary", rbac: "get on nodes/stats", noun: "a kubelet summary"}
	podsEndpoint    = kubeletEndpoint{what: "pods", rbac: "get on nodes/pods (kubelets with fine-grained authorization, KubeletFineGrainedAuthz: beta and on by default from v1.33, GA in v1.36) or nodes/proxy (older kubelets)", noun: "a kubelet pod list (v1 PodList)"}
)

// get GETs u and decodes the JSON answer, at most k.max bytes, into v. The
// body is read into buf, which the caller owns (the summary's is reused
// across scrapes: a fresh body per scrape was a few percent of what one
// interval allocated); a buffer grown past maxKeptBuffer is released.
func (k *KubeletClient) get(ctx context.Context, u string, ep kubeletEndpoint, buf *bytes.Buffer, v any) (int, *KubeletError) {
	defer func() {
		if buf.Cap() > maxKeptBuffer {
			*buf = bytes.Buffer{}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, &KubeletError{Class: KubeletErrUnreachable, URL: u, What: ep.what, Err: err, Fix: "fix --kubelet-endpoint"}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, k.transportError(u, ep, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return 0, statusError(u, ep, resp.StatusCode, strings.TrimSpace(string(snippet)))
	}
	if resp.ContentLength > k.max {
		return 0, &KubeletError{Class: KubeletErrBadResponse, URL: u, What: ep.what,
			Err: fmt.Errorf("response of %d bytes exceeds the %d-byte limit", resp.ContentLength, k.max), Fix: "raise MaxResponseBytes"}
	}
	buf.Reset()
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength) + 1)
	}
	_, err = buf.ReadFrom(io.LimitReader(resp.Body, k.max+1))
	body := buf.Bytes()
	if err != nil {
		ke := k.transportError(u, ep, err)
		if ke.Class != KubeletErrTimeout {
			ke.Class, ke.Fix = KubeletErrBadResponse, "the response broke off: see the kubelet's log"
		}
		ke.Err = fmt.Errorf("read body: %w", ke.Err)
		return len(body), ke
	}
	if int64(len(body)) > k.max {
		return len(body), &KubeletError{Class: KubeletErrBadResponse, URL: u, What: ep.what,
			Err: fmt.Errorf("response exceeds the %d-byte limit", k.max), Fix: "raise MaxResponseBytes"}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return len(body), &KubeletError{Class: KubeletErrBadResponse, URL: u, What: ep.what,
			Err: fmt.Errorf("decode %d bytes: %w", len(body), err), Fix: "the answer is not " + ep.noun + ": check that --kubelet-endpoint is the kubelet's port"}
	}
	return len(body), nil
}

// maxKeptBuffer is the largest response buffer kept between scrapes (the
// summary BenchmarkCollect serves for 110 pods is 221 kB); a larger
// answer's buffer is released after its scrape.
const maxKeptBuffer = 8 << 20

// Stats returns the client's scrape counts.
func (k *KubeletClient) Stats() KubeletStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return KubeletStats{Scrapes: k.scrapes.Load(), Failures: k.failures.Load(), Reused: k.cacheHits.Load(), LastBytes: k.bytes.Load(), LastError: k.lastErr}
}

// LastSuccess is when a scrape last succeeded, on the client's clock; zero
// before the first success.
func (k *KubeletClient) LastSuccess() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastOK
}

// LastError is the last scrape's failure, classified; nil when the last
// scrape succeeded or none has run. Summaries reused within MinInterval do
// not change it.
func (k *KubeletClient) LastError() *KubeletError {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.current
}

// RegisterMetrics registers the fleetagent.collector.kubelet.* self-metrics
// of selfmetrics.Table: scrapes by result, the last response's size, and up
// (1 when the last scrape succeeded, 0 with error.type set to its
// KubeletErrorClass when it failed; absent before the first scrape).
func (k *KubeletClient) RegisterMetrics(m metric.Meter) error {
	set := selfmetrics.NewSet(m)
	scrapes := set.Int64("fleetagent.collector.kubelet.scrapes")
	size := set.Int64("fleetagent.collector.kubelet.response.size")
	up := set.Int64("fleetagent.collector.kubelet.up")
	return set.Register(func(_ context.Context, o metric.Observer) error {
		total, failed := k.scrapes.Load(), k.failures.Load()
		o.ObserveInt64(scrapes, int64(total-failed), metric.WithAttributes(attribute.String("result", "success")))
		o.ObserveInt64(scrapes, int64(failed), metric.WithAttributes(attribute.String("result", "failure")))
		o.ObserveInt64(size, int64(k.bytes.Load()))
		k.mu.Lock()
		cur, ok := k.current, !k.lastOK.IsZero()
		k.mu.Unlock()
		switch {
		case cur != nil:
			o.ObserveInt64(up, 0, metric.WithAttributes(attribute.String("error.type", string(cur.Class))))
		case ok:
			o.ObserveInt64(up, 1)
		}
		return nil
	})
}

// Pods returns the pods the kubelet runs, from its /pods (a v1 PodList of
// every pod bound to the node that the kubelet knows, spec and status,
// static pods included under the kubelet's own UID): the last list when it
// is younger than PodsMinInterval, otherwise a fresh GET, bounded like a
// summary scrape by Timeout and MaxResponseBytes. The kubelet authorizes
// the GET as nodes/pods (fine-grained kubelet authorization) or nodes/proxy.
// A failure returns a *KubeletError and leaves the last list in place for
// the next call within PodsMinInterval to reuse; it does not change the
// summary's health (LastError, LastSuccess). The slice and pods are
// shared: do not modify them.
func (k *KubeletClient) Pods(ctx context.Context) ([]*corev1.Pod, error) {
	k.podsMu.Lock()
	defer k.podsMu.Unlock()
	now := k.clock.Now()
	if !k.podsAt.IsZero() && k.podsMinIntv > 0 && now.Sub(k.podsAt) < k.podsMinIntv {
		k.podsReused.Add(1)
		if e := k.podsLastErr.Load(); e != nil {
			return k.podsCached, e
		}
		return k.podsCached, nil
	}
	k.podsGets.Add(1)
	var list corev1.PodList
	// No kept buffer: /pods is read rarely (a fallback, or once per
	// interval in kubelet mode, where the summary's buffer dominates).
	var buf bytes.Buffer
	n, err := k.get(ctx, k.podsURL, podsEndpoint, &buf, &list)
	k.podsBytes.Store(uint64(n))
	k.podsAt = now
	if err != nil {
		k.podsFails.Add(1)
		k.podsLastErr.Store(err)
		return k.podsCached, err
	}
	pods := make([]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pods[i] = &list.Items[i]
	}
	k.podsCached = pods
	k.podsLastErr.Store(nil)
	return pods, nil
}

// KubeletPodsStats is a snapshot of the client's /pods counts.
type KubeletPodsStats struct {
	Gets      uint64 // GETs of /pods sent
	Failures  uint64
	Reused    uint64 // calls served from the last list (PodsMinInterval)
	LastBytes uint64
	LastError string
}

// PodsStats returns the client's /pods counts.
func (k *KubeletClient) PodsStats() KubeletPodsStats {
	st := KubeletPodsStats{Gets: k.podsGets.Load(), Failures: k.podsFails.Load(), Reused: k.podsReused.Load(), LastBytes: k.podsBytes.Load()}
	if e := k.podsLastErr.Load(); e != nil {
		st.LastError = e.Error()
	}
	return st
}

// reuseInterval is a response-reuse interval as configured: zero takes def,
// negative disables reuse.
func reuseInterval(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}
