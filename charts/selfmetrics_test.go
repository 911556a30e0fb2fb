package charts_test

import (
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/selfmetrics"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
)

// rigUser is the in-process agent whose /metrics names the monitoring
// assets are checked against; it has exactly deploy/'s RBAC.
const rigUser = "system:serviceaccount:fleetagent:rig-agent"

var (
	servedOnce sync.Once
	served     map[string]bool
)

// servedMetrics runs one real agent (agent.New, as the binary builds it)
// against the control plane and a stand-in kubelet until it is ready and
// has scraped the kubelet, and returns the metric family names its
// /metrics serves: the self-metrics of internal/selfmetrics.Table as the
// OpenTelemetry Prometheus exporter names them, and the Go runtime and
// process collectors. Series names (with _bucket, _sum, _count) are
// included for histograms and summaries.
func servedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	servedOnce.Do(func() { served = scrapeAgent(t) })
	if served == nil {
		t.Fatal("the agent's /metrics could not be read (see the first test that asked)")
	}
	return served
}

func scrapeAgent(t *testing.T) map[string]bool {
	const node = "rig-node"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(noThrottle(cp.AdminConfig()))
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	r := agentrig.New(t, agentrig.Options{CP: cp, Node: node, User: rigUser})
	r.Start(t)
	defer r.Stop(t)
	base := "http://" + r.Agent.AdminAddr()
	var body string
	agentrig.WaitFor(t, time.Minute, "agent ready with a kubelet scrape on /metrics", func() bool {
		code, b := httpGet(ctx, base+"/readyz")
		if code != http.StatusOK || strings.TrimSpace(b) != "ok" {
			return false
		}
		_, body = httpGet(ctx, base+"/metrics")
		return strings.Contains(body, "fleetagent_collector_kubelet_scrapes")
	}, r.Logs.String)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	names := map[string]bool{}
	for name, f := range fams {
		names[name] = true
		switch f.GetType().String() {
		case "HISTOGRAM":
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		case "SUMMARY":
			for _, s := range []string{"_sum", "_count"} {
				names[name+s] = true
			}
		}
	}
	return names
}

func httpGet(ctx context.Context, url string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServedMetricsCoverTheTable: every row of internal/selfmetrics.Table
// is served under its Prometheus name (dots to underscores, plus the
// exporter's unit and _total suffixes), so the name set the alerts and the
// dashboard are checked against is the agent's whole self-metric surface.
func TestServedMetricsCoverTheTable(t *testing.T) {
	names := servedMetrics(t)
	var all []string
	for n := range names {
		all = append(all, n)
	}
	sort.Strings(all)
	t.Logf("served: %s", strings.Join(all, " "))
	for _, d := range selfmetrics.Table {
		base := strings.ReplaceAll(d.Name, ".", "_")
		found := false
		for n := range names {
			if n == base || strings.HasPrefix(n, base+"_") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s (%s) is not served under %s or %s_<unit>", d.Name, d.Kind, base, base)
		}
	}
}
