package agent_test

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
)

// TestReadyzWaitsForTheKubelet: with synced informers, /readyz still fails
// while the kubelet refuses the agent, naming what to fix, and
// fleetagent.collector.kubelet.up says why; it passes once a scrape
// succeeds.
func TestReadyzWaitsForTheKubelet(t *testing.T) {
	r := newRig(t, cluster.NodeNames()[3], agentUser, nil)
	r.Kubelet.SetStatus(http.StatusForbidden)
	if err := r.Agent.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Agent.Shutdown(t.Context())
	waitFor(t, "the informers sync", r.Agent.Informers().HasSynced)
	base := "http://" + r.Agent.AdminAddr()
	code, body := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "HTTP 403") || !strings.Contains(body, "RBAC get on nodes/stats") {
		t.Errorf("/readyz with a kubelet answering 403: %d %q, want 503 saying what to fix", code, body)
	}
	waitFor(t, "kubelet up metric says forbidden", func() bool {
		_, m := get(t, base+"/metrics")
		return metricLine(m, "fleetagent_collector_kubelet_up", `error_type="forbidden"`, " 0")
	})

	r.Kubelet.SetStatus(http.StatusOK)
	waitFor(t, "/readyz passes once a scrape succeeds", func() bool {
		code, body := get(t, base+"/readyz")
		return code == http.StatusOK && strings.TrimSpace(body) == "ok"
	})
	_, m := get(t, base+"/metrics")
	if !metricLine(m, "fleetagent_collector_kubelet_up", "", " 1") {
		t.Errorf("/metrics after a good scrape has no fleetagent_collector_kubelet_up 1")
	}
}

// TestBrokenKubeletDoesNotBlockReadinessForever: after
// --kubelet-ready-timeout without a successful scrape the agent is ready,
// degraded, and says why.
func TestBrokenKubeletDoesNotBlockReadinessForever(t *testing.T) {
	r := newRig(t, cluster.NodeNames()[4], agentUser, func(c *agent.Config) { c.KubeletReadyTimeout = 2 * time.Second })
	r.Kubelet.SetStatus(http.StatusUnauthorized)
	if err := r.Agent.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Agent.Shutdown(t.Context())
	base := "http://" + r.Agent.AdminAddr()
	var body string
	waitFor(t, "/readyz ready but degraded after the kubelet ready timeout", func() bool {
		var code int
		code, body = get(t, base+"/readyz")
		return code == http.StatusOK
	})
	for _, w := range []string{"degraded", "no successful kubelet scrape in --kubelet-ready-timeout 2s", "HTTP 401", "--kubelet-token-file"} {
		if !strings.Contains(body, w) {
			t.Errorf("/readyz body does not say %q: %q", w, body)
		}
	}
	if n := strings.Count(r.Logs.String(), "no successful kubelet scrape within --kubelet-ready-timeout"); n != 1 {
		t.Errorf("the timeout is logged %d times, want once; log:\n%s", n, r.Logs.String())
	}
}

// TestSkipVerifyNeedsNoOtherSetting: with --kubelet-insecure-skip-verify
// and nothing else the agent reads an HTTPS kubelet whose certificate it
// cannot verify, is ready, and said once at start that it does not verify.
func TestSkipVerifyNeedsNoOtherSetting(t *testing.T) {
	kubelet, err := fakekubelet.StartWith(filepath.Join("..", "collector", "testdata", "summary.json"), "", fakekubelet.Options{TLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	defer kubelet.Close()
	r := newRig(t, cluster.NodeNames()[5], agentUser, func(c *agent.Config) {
		c.KubeletEndpoint, c.KubeletInsecureSkipVerify = kubelet.URL(), true
	})
	if err := r.Agent.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Agent.Shutdown(t.Context())
	waitFor(t, "/readyz ok", func() bool {
		code, body := get(t, "http://"+r.Agent.AdminAddr()+"/readyz")
		return code == http.StatusOK && strings.TrimSpace(body) == "ok"
	})
	if n := strings.Count(r.Logs.String(), "the serving certificate is NOT verified"); n != 1 {
		t.Errorf("skip-verify logged %d times, want once at start; log:\n%s", n, r.Logs.String())
	}
}

// TestNewReportsLocalProblemsAtOnce: New reads the kubelet's CA and token
// files and checks the OTEL_* settings, and reports every problem, with the
// configuration's own, in one error.
func TestNewReportsLocalProblemsAtOnce(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
	missing := filepath.Join(t.TempDir(), "missing")
	cfg := agent.DefaultConfig()
	cfg.FleetSize = 2
	cfg.KubeletEndpoint = "https://127.0.0.1:10250"
	cfg.KubeletCAFile, cfg.KubeletTokenFile = missing, missing
	_, err := agent.New(cfg, agent.Options{RESTConfig: cp.UserConfig(agentUser)})
	for _, w := range []string{"node name is empty", `kubelet CA file "` + missing + `" cannot be read`, `kubelet token file "` + missing + `" cannot be read`, `OTEL_EXPORTER_OTLP_PROTOCOL="thrift"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("New error %v does not say %q", err, w)
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	agentrig.WaitFor(t, 60*time.Second, what, ok)
}

// metricLine reports whether a sample of the metric whose name starts with
// name carries labels and ends with value.
func metricLine(metrics, name, labels, value string) bool {
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, name) && strings.Contains(l, labels) && strings.HasSuffix(l, value) {
			return true
		}
	}
	return false
}
