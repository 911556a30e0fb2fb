package limiter

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	"k8s.io/client-go/rest"
)

func newDaemonSetClient(cfg *rest.Config) (appsv1client.DaemonSetsGetter, error) {
	c, err := appsv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("limiter: build the client that reads the fleet size: %w", err)
	}
	return c, nil
}

// readFleetSize reads the DaemonSet's desired number of scheduled pods.
// resourceVersion=0 lets the apiserver answer from its watch cache, so the
// read costs no etcd request; the request pays from the budget like any
// other.
func (b *Budget) readFleetSize(ctx context.Context, c appsv1client.DaemonSetsGetter) (int, error) {
	ds, err := c.DaemonSets(b.cfg.DaemonSetNamespace).Get(ctx, b.cfg.DaemonSetName, metav1.GetOptions{ResourceVersion: "0"})
	if err != nil {
		return 0, fmt.Errorf("read fleet size from DaemonSet %s/%s (grant the agent get on daemonsets, or set a fixed fleet size): %w",
			b.cfg.DaemonSetNamespace, b.cfg.DaemonSetName, err)
	}
	n := int(ds.Status.DesiredNumberScheduled)
	if n < int(ds.Status.CurrentNumberScheduled) {
		n = int(ds.Status.CurrentNumberScheduled)
	}
	if n < 1 {
		return 0, fmt.Errorf("DaemonSet %s/%s reports no scheduled pods yet; keeping the current fleet size", b.cfg.DaemonSetNamespace, b.cfg.DaemonSetName)
	}
	return n, nil
}

// refreshInterval is FleetSizeRefresh randomised by ±FleetSizeRefreshJitter.
func (b *Budget) refreshInterval() time.Duration {
	b.mu.Lock()
	u := b.cfg.Rand.Float64()
	b.mu.Unlock()
	f := 1 + b.cfg.FleetSizeRefreshJitter*(2*u-1)
	return time.Duration(f * float64(b.cfg.FleetSizeRefresh))
}

// runFleetSize reads the fleet size now (the read waits for its token like
// any request) and then every jittered FleetSizeRefresh until ctx ends.
func (b *Budget) runFleetSize(ctx context.Context, c appsv1client.DaemonSetsGetter) {
	for {
		n, err := b.readFleetSize(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			b.counts.fleetRefreshErr.Add(1)
			b.log.Warn("fleet size not refreshed", "err", err)
		} else {
			b.counts.fleetRefreshes.Add(1)
			b.setFleetSize(n)
		}
		t := b.clock.NewTimer(b.refreshInterval())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}
