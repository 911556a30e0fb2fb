package bench

import (
	"strings"
	"testing"
)

// TestFits: strategies that hold every pod of the cluster are skipped
// where their agents would not fit in half the machine's memory (at 5000
// nodes on 24 GiB, not at 1000), with the figure; the others never are.
func TestFits(t *testing.T) {
	cfg := Config{PodsPerNode: 30, Sample: 20}
	const mem = 24 << 30
	inf := ClusterInformer()
	if ok, why := fits(inf, cfg, 1000, mem); !ok {
		t.Errorf("cluster-informer at 1000 nodes skipped: %s", why)
	}
	ok, why := fits(inf, cfg, 5000, mem)
	if ok || !strings.Contains(why, "cluster-informer not run at 5000 nodes") || !strings.Contains(why, "about 33.6 GB") || !strings.Contains(why, "20 agents") {
		t.Errorf("cluster-informer at 5000 nodes: ok %v, %q", ok, why)
	}
	if ok, _ := fits(Incident(), cfg, 5000, mem); ok {
		t.Error("incident at 5000 nodes not skipped")
	}
	for _, st := range []Strategy{WatchList(), FleetAgent()} {
		if ok, why := fits(st, cfg, 5000, mem); !ok {
			t.Errorf("%s skipped: %s", st.Name, why)
		}
	}
	if ok, _ := fits(inf, cfg, 5000, 0); !ok {
		t.Error("skipped with the machine's memory unknown")
	}
	if memTotal() == 0 {
		t.Error("memTotal read no MemTotal from /proc/meminfo")
	}
}
