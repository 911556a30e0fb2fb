package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/exporter"
)

// checkLocal builds what needs nothing but local files and flags: the
// kubelet client (CA and token files read) and the OTLP exporter's
// configuration from OTEL_*. It runs in New, so that a bad setting ends the
// process before its first apiserver request: a crash-looping DaemonSet
// then costs the apiserver nothing.
func (a *Agent) checkLocal() []error {
	var errs []error
	if checkKubeletEndpoint(a.cfg.KubeletEndpoint) == nil { // else Validate reported it
		kc := a.kubeletConfig()
		client, err := collector.NewKubeletClient(kc)
		if err != nil {
			errs = append(errs, err)
		} else {
			a.kubelet = &kubeletGate{client: client, clk: a.clk, timeout: a.cfg.KubeletReadyTimeout, log: a.log.With("component", "kubelet")}
			a.logKubeletTLS(kc)
		}
	}
	if err := exporter.CheckEnv(a.exportConfig("exporter")); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// kubeletConfig turns the agent's kubelet flags into the collector's, and
// drops the in-cluster default credential files when they do not exist
// (outside a pod, against a plain-http kubelet endpoint).
func (a *Agent) kubeletConfig() collector.KubeletConfig {
	k := collector.KubeletConfig{Endpoint: a.cfg.KubeletEndpoint, CAFile: a.cfg.KubeletCAFile, TokenFile: a.cfg.KubeletTokenFile,
		ServerName: a.cfg.KubeletTLSServerName, InsecureSkipVerify: a.cfg.KubeletInsecureSkipVerify, Clock: a.clk,
		// /pods serializes every pod of the node: at most once per
		// collection interval, the kubelet source's poll and the
		// enrichment fallback together.
		PodsMinInterval: a.cfg.CollectionInterval}
	if k.CAFile == collector.DefaultCAFile {
		if _, err := os.Stat(k.CAFile); err != nil {
			k.CAFile = ""
		}
	}
	if k.TokenFile == collector.DefaultTokenFile {
		if _, err := os.Stat(k.TokenFile); err != nil {
			k.TokenFile = ""
		}
	}
	return k
}

// logKubeletTLS says once, at start, how the kubelet's certificate is
// checked; skipping the check is a warning.
func (a *Agent) logKubeletTLS(k collector.KubeletConfig) {
	log := a.log.With("component", "kubelet", "endpoint", k.Endpoint)
	u, _ := url.Parse(k.Endpoint)
	switch {
	case u.Scheme == "http":
		log.Warn("kubelet endpoint is plain HTTP: no TLS, the token (if any) travels in clear")
	case k.InsecureSkipVerify:
		log.Warn("kubelet TLS: the serving certificate is NOT verified (--kubelet-insecure-skip-verify): whoever answers at the endpoint receives the agent's token")
	case k.CAFile != "":
		log.Info("kubelet TLS: verifying the serving certificate against a CA file", "ca_file", k.CAFile, "server_name", k.ServerName)
	default:
		log.Info("kubelet TLS: verifying the serving certificate against the system roots", "server_name", k.ServerName)
	}
}

// probeKubelet scrapes the kubelet once as the collectors start, so that
// readiness reflects the kubelet at once rather than an export interval
// later. The summary is reused by a collection within MinInterval.
func (a *Agent) probeKubelet(ctx context.Context) {
	if a.kubelet == nil {
		return
	}
	a.kubelet.start()
	_, err := a.kubelet.client.Summary(ctx)
	var ke *collector.KubeletError
	switch {
	case err == nil:
		a.kubelet.log.Info("kubelet scraped")
	case ctx.Err() != nil:
	case errors.As(err, &ke):
		a.kubelet.log.Warn("kubelet scrape failed; not ready until one succeeds", "error_type", string(ke.Class), "err", err,
			"ready_anyway_after", a.kubelet.timeout)
	default:
		a.kubelet.log.Warn("kubelet scrape failed; not ready until one succeeds", "err", err, "ready_anyway_after", a.kubelet.timeout)
	}
}

// kubeletGate is the kubelet's part of readiness: not ready until a scrape
// has succeeded, for at most timeout after the collectors started (so a
// broken kubelet cannot block a rollout forever); then ready, and degraded
// while scrapes fail.
type kubeletGate struct {
	client  *collector.KubeletClient
	clk     clock.PassiveClock
	timeout time.Duration
	log     *slog.Logger

	mu     sync.Mutex
	since  time.Time // when the collectors started; zero before
	gaveUp bool      // the timeout passed without a success (logged once)
}

func (g *kubeletGate) start() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.since.IsZero() {
		g.since = g.clk.Now()
	}
}

// health says whether the kubelet lets the agent be ready, why not, and
// what is degraded.
func (g *kubeletGate) health() (ready bool, reason, degraded string) {
	if g == nil {
		return true, "", ""
	}
	scraped := !g.client.LastSuccess().IsZero()
	last := g.client.LastError()
	why := "no scrape has finished yet"
	if last != nil {
		why = last.Error()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case scraped && last == nil:
		return true, "", ""
	case scraped:
		return true, "", why
	case g.since.IsZero():
		return false, "kubelet not scraped yet: the collectors have not started", ""
	case g.clk.Since(g.since) < g.timeout:
		return false, fmt.Sprintf("no successful kubelet scrape yet (ready but degraded after --kubelet-ready-timeout %s): %s", g.timeout, why), ""
	}
	if !g.gaveUp {
		g.gaveUp = true
		g.log.Warn("no successful kubelet scrape within --kubelet-ready-timeout; ready but degraded, exporting no usage metrics", "timeout", g.timeout, "last_error", why)
	}
	return true, "", fmt.Sprintf("no successful kubelet scrape in --kubelet-ready-timeout %s: %s", g.timeout, why)
}
