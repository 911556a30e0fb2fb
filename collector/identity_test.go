package collector

import (
	"strings"
	"testing"
)

// kubeletLines is the kubelet collector's output: one line per series.
func kubeletLines(t *testing.T, p *pipeline) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(render(p.collect(t)), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestKubeletSeriesKeepIdentityWhileStale: while the informer state is not
// synced (stale: kill switch, apiserver unreachable), kubelet series keep the
// workload, label and container attributes last known for their pod; they
// are the same series before, during and after. A pod never seen fresh has
// none, as before.
func TestKubeletSeriesKeepIdentityWhileStale(t *testing.T) {
	srv := serveFile(t, "testdata/summary.json")
	st := loadState(t)
	c, _ := newTestKubeletCollector(t, KubeletConfig{Endpoint: srv.URL(), MinInterval: -1}, st)
	p := newPipeline(t, []Collector{c})
	fresh := kubeletLines(t, p)
	if !strings.Contains(fresh, `k8s.deployment.name="web"`) || !strings.Contains(fresh, `container.id="77f005ca`) {
		t.Fatalf("fresh output lacks workload or container attributes:\n%s", fresh)
	}
	st.SetSynced(false)
	stale := kubeletLines(t, p)
	if stale != fresh {
		t.Errorf("series changed while the state is stale:\n%s", diff(fresh, stale))
	}
	st.SetSynced(true)
	if again := kubeletLines(t, p); again != fresh {
		t.Errorf("series changed after the state is fresh again:\n%s", diff(fresh, again))
	}

	// A collector that never saw the state fresh has nothing to keep.
	st2 := loadState(t)
	st2.SetSynced(false)
	c2, _ := newTestKubeletCollector(t, KubeletConfig{Endpoint: srv.URL(), MinInterval: -1}, st2)
	if out := kubeletLines(t, newPipeline(t, []Collector{c2})); strings.Contains(out, "k8s.deployment.name") {
		t.Errorf("workload attributes without any fresh state:\n%s", out)
	}
}
