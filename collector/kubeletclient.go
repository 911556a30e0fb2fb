package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// Defaults of KubeletConfig.
const (
	DefaultKubeletTimeout     = 10 * time.Second
	DefaultKubeletMaxResponse = 16 << 20 // 16 MiB: a 110-pod node's summary is well under 1 MiB
	DefaultKubeletMinInterval = 5 * time.Second
	// DefaultTokenFile and DefaultCAFile are the service-account token and
	// cluster CA mounted into every pod.
	DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// KubeletConfig configures the kubelet summary client. The kubelet is
// node-local: the agent never reaches it through the apiserver.
type KubeletConfig struct {
	// Endpoint is the kubelet's base URL, e.g. https://10.0.0.5:10250 (the
	// node IP from the downward API) or http://127.0.0.1:port in tests.
	Endpoint string
	// TokenFile is a bearer token file (re-read as it rotates); empty means
	// no Authorization header. The agent passes DefaultTokenFile.
	TokenFile string
	// CAFile verifies the kubelet's serving certificate; empty means the
	// system roots. The agent passes DefaultCAFile.
	CAFile string
	// InsecureSkipVerify skips certificate verification, for kubelets whose
	// serving certificate is self-signed (not signed by the cluster CA).
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
	// Clock is used for MinInterval (default the real clock).
	Clock clock.PassiveClock
}

// Validate reports every problem at once.
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
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("kubelet: timeout %v is negative", c.Timeout))
	}
	if c.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("kubelet: max response bytes %d is negative", c.MaxResponseBytes))
	}
	return errors.Join(errs...)
}

// KubeletClient fetches /stats/summary from one kubelet.
type KubeletClient struct {
	url     string
	client  *http.Client
	timeout time.Duration
	max     int64
	minIntv time.Duration
	clock   clock.PassiveClock

	// cacheMu serialises scrapes so concurrent collections share one.
	cacheMu   sync.Mutex
	cached    *Summary
	cachedAt  time.Time
	cacheHits atomic.Uint64

	scrapes  atomic.Uint64
	failures atomic.Uint64
	bytes    atomic.Uint64
	mu       sync.Mutex
	lastErr  string
}

// KubeletStats is a snapshot of the client's scrape counts.
type KubeletStats struct {
	Scrapes   uint64
	Failures  uint64
	Reused    uint64 // collections served from the last summary (MinInterval)
	LastBytes uint64
	LastError string
}

// NewKubeletClient builds a client from cfg. The transport comes from
// client-go, which re-reads the token file as the kubelet rotates it.
func NewKubeletClient(cfg KubeletConfig) (*KubeletClient, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc := &rest.Config{
		Host:            cfg.Endpoint,
		BearerTokenFile: cfg.TokenFile,
		TLSClientConfig: rest.TLSClientConfig{CAFile: cfg.CAFile, Insecure: cfg.InsecureSkipVerify},
	}
	rt, err := rest.TransportFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubelet client for %s: %w (check the CA file %q and token file %q)", cfg.Endpoint, err, cfg.CAFile, cfg.TokenFile)
	}
	var clk clock.PassiveClock = clock.RealClock{}
	if cfg.Clock != nil {
		clk = cfg.Clock
	}
	minIntv := cfg.MinInterval
	switch {
	case minIntv == 0:
		minIntv = DefaultKubeletMinInterval
	case minIntv < 0:
		minIntv = 0
	}
	return &KubeletClient{
		url:     strings.TrimSuffix(cfg.Endpoint, "/") + "/stats/summary",
		client:  &http.Client{Transport: rt},
		timeout: defaultDuration(cfg.Timeout, DefaultKubeletTimeout),
		max:     defaultInt(cfg.MaxResponseBytes, DefaultKubeletMaxResponse),
		minIntv: minIntv,
		clock:   clk,
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
// counted and returned with the endpoint and what to check. The returned
// Summary is shared: do not modify it.
func (k *KubeletClient) Summary(ctx context.Context) (*Summary, error) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	now := k.clock.Now()
	if k.cached != nil && k.minIntv > 0 && now.Sub(k.cachedAt) < k.minIntv {
		k.cacheHits.Add(1)
		return k.cached, nil
	}
	s, err := k.scrape(ctx)
	if err == nil {
		k.cached, k.cachedAt = s, now
	}
	return s, err
}

func (k *KubeletClient) scrape(ctx context.Context) (*Summary, error) {
	k.scrapes.Add(1)
	s, n, err := k.fetch(ctx)
	k.bytes.Store(uint64(n))
	k.mu.Lock()
	if err != nil {
		k.failures.Add(1)
		k.lastErr = err.Error()
	}
	k.mu.Unlock()
	return s, err
}

func (k *KubeletClient) fetch(ctx context.Context) (*Summary, int, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("kubelet summary: build request for %s: %w", k.url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("kubelet summary: GET %s: %w (is the kubelet endpoint reachable from the pod?)", k.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (the service account needs RBAC get on nodes/stats)"
		}
		return nil, 0, fmt.Errorf("kubelet summary: GET %s: HTTP %d%s: %s", k.url, resp.StatusCode, hint, strings.TrimSpace(string(snippet)))
	}
	if resp.ContentLength > k.max {
		return nil, 0, fmt.Errorf("kubelet summary: GET %s: response of %d bytes exceeds the %d-byte limit (raise MaxResponseBytes)", k.url, resp.ContentLength, k.max)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, k.max+1))
	if err != nil {
		return nil, len(body), fmt.Errorf("kubelet summary: read %s: %w", k.url, err)
	}
	if int64(len(body)) > k.max {
		return nil, len(body), fmt.Errorf("kubelet summary: GET %s: response exceeds the %d-byte limit (raise MaxResponseBytes)", k.url, k.max)
	}
	var s Summary
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, len(body), fmt.Errorf("kubelet summary: decode %d bytes from %s: %w", len(body), k.url, err)
	}
	return &s, len(body), nil
}

// Stats returns the client's scrape counts.
func (k *KubeletClient) Stats() KubeletStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return KubeletStats{Scrapes: k.scrapes.Load(), Failures: k.failures.Load(), Reused: k.cacheHits.Load(), LastBytes: k.bytes.Load(), LastError: k.lastErr}
}

// RegisterMetrics registers fleetagent.collector.kubelet.scrapes (counter,
// {scrape}, attribute result=success|failure) and
// fleetagent.collector.kubelet.response.size (gauge, By, the last response).
func (k *KubeletClient) RegisterMetrics(m metric.Meter) error {
	scrapes, err := m.Int64ObservableCounter("fleetagent.collector.kubelet.scrapes", metric.WithUnit("{scrape}"),
		metric.WithDescription("Kubelet /stats/summary scrapes by result."))
	if err != nil {
		return fmt.Errorf("register fleetagent.collector.kubelet.scrapes: %w", err)
	}
	size, err := m.Int64ObservableGauge("fleetagent.collector.kubelet.response.size", metric.WithUnit("By"),
		metric.WithDescription("Size of the last kubelet /stats/summary response."))
	if err != nil {
		return fmt.Errorf("register fleetagent.collector.kubelet.response.size: %w", err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		total, failed := k.scrapes.Load(), k.failures.Load()
		o.ObserveInt64(scrapes, int64(total-failed), metric.WithAttributes(attribute.String("result", "success")))
		o.ObserveInt64(scrapes, int64(failed), metric.WithAttributes(attribute.String("result", "failure")))
		o.ObserveInt64(size, int64(k.bytes.Load()))
		return nil
	}, scrapes, size)
	if err != nil {
		return fmt.Errorf("register kubelet self-metrics callback: %w", err)
	}
	return nil
}
