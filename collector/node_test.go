package collector

import (
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
)

// TestNodeSchedulingAndInfo: a cordoned node with two taints reports
// unschedulable 1 and one series per taint; once uncordoned with no taints,
// unschedulable 0 and no taint series. k8s.node.info carries the kubelet
// and runtime versions of status.nodeInfo, the runtime split at "://".
func TestNodeSchedulingAndInfo(t *testing.T) {
	st := loadState(t)
	node, _ := st.Node()
	rm := newPipeline(t, []Collector{NewNodeCollector(st)}).collect(t)
	if got := one(t, rm, "k8s.node.unschedulable", nil); got != 1 {
		t.Errorf("cordoned node unschedulable = %v, want 1", got)
	}
	if got := one(t, rm, "k8s.node.taint", map[string]string{"k8s.node.taint.key": "dedicated", "k8s.node.taint.value": "storefront", "k8s.node.taint.effect": "PreferNoSchedule"}); got != 1 {
		t.Errorf("dedicated taint = %v, want 1", got)
	}
	if n := len(pointsOf(rm, "k8s.node.taint")); n != 2 {
		t.Errorf("%d taint series, want 2", n)
	}
	info := map[string]string{"k8s.kubelet.version": "v1.37.2", "container.runtime.name": "containerd", "container.runtime.version": "2.4.2", "os.type": "linux"}
	if got := one(t, rm, "k8s.node.info", info); got != 1 {
		t.Errorf("k8s.node.info%v = %v, want 1", info, got)
	}

	n := node.DeepCopy()
	n.Spec.Unschedulable, n.Spec.Taints = false, nil
	n.Status.NodeInfo.ContainerRuntimeVersion = "1.2.3" // no scheme
	rm = newPipeline(t, []Collector{NewNodeCollector(fakestate.New(st.Pods(), n))}).collect(t)
	if got := one(t, rm, "k8s.node.unschedulable", nil); got != 0 {
		t.Errorf("schedulable node unschedulable = %v, want 0", got)
	}
	if pts := pointsOf(rm, "k8s.node.taint"); len(pts) != 0 {
		t.Errorf("untainted node has taint series %v", pts)
	}
	pts := pointsOf(rm, "k8s.node.info")
	if len(pts) != 1 || pts[0].attrs["container.runtime.version"] != "1.2.3" || pts[0].attrs["container.runtime.name"] != "" {
		t.Errorf("k8s.node.info with a bare runtime version = %v, want version 1.2.3 and no name", pts)
	}
}
