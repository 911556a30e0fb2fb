package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
)

// TestKubeletGate walks the kubelet's part of readiness on a fake clock:
// not ready before the collectors start and until a scrape succeeds, for
// at most the ready timeout; then ready but degraded (said once in the
// log); ready once a scrape succeeds; degraded again while scrapes fail.
func TestKubeletGate(t *testing.T) {
	kub, err := fakekubelet.Start("../collector/testdata/summary.json", "")
	if err != nil {
		t.Fatal(err)
	}
	defer kub.Close()
	kub.SetStatus(http.StatusForbidden)
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	client, err := collector.NewKubeletClient(collector.KubeletConfig{Endpoint: kub.URL(), Clock: clk, MinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	g := &kubeletGate{client: client, clk: clk, timeout: 2 * time.Minute, log: slog.New(slog.NewTextHandler(&logs, nil))}
	check := func(step string, wantReady bool, wantReason, wantDegraded string) {
		t.Helper()
		ready, reason, degraded := g.health()
		if ready != wantReady || !contains(reason, wantReason) || !contains(degraded, wantDegraded) {
			t.Errorf("%s: health() = %v, %q, %q; want %v, reason with %q, degraded with %q", step, ready, reason, degraded, wantReady, wantReason, wantDegraded)
		}
	}
	scrape := func() { _, _ = client.Summary(context.Background()) }

	check("before start", false, "collectors have not started", "")
	g.start()
	check("started, nothing scraped", false, "no scrape has finished yet", "")
	scrape()
	check("403", false, "RBAC get on nodes/stats", "")
	clk.SetTime(clk.Now().Add(2*time.Minute - time.Second))
	check("403, just before the timeout", false, "--kubelet-ready-timeout 2m0s", "")
	clk.SetTime(clk.Now().Add(time.Second))
	check("403, timed out", true, "", "no successful kubelet scrape in --kubelet-ready-timeout 2m0s")
	check("403, timed out, asked again", true, "", "RBAC get on nodes/stats")
	if n := strings.Count(logs.String(), "ready but degraded"); n != 1 {
		t.Errorf("the timeout was logged %d times, want once:\n%s", n, logs.String())
	}
	kub.SetStatus(http.StatusOK)
	scrape()
	check("scraped", true, "", "")
	kub.SetStatus(http.StatusForbidden)
	scrape()
	check("failing after a success", true, "", "HTTP 403")
}

func contains(s, sub string) bool {
	return sub == "" && s == "" || sub != "" && strings.Contains(s, sub)
}
