package limiter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
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

// Where the fleet size comes from, in Stats.FleetSizeSource.
const (
	SourceFixed     = "fixed"     // Config.FleetSize
	SourceHint      = "hint"      // Config.FleetSizeHintPath, until the DaemonSet is read
	SourceAssumed   = "assumed"   // Config.AssumedFleetSize, until the DaemonSet is read
	SourceDaemonSet = "daemonset" // the DaemonSet's status
)

// readFleetSizeHint reads a fleet size written as a decimal number.
func readFleetSizeHint(path string) (int, error) {
	content, err := readControlFile(path)
	if err != nil {
		return 0, err
	}
	v := strings.TrimSpace(string(content))
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("fleet-size hint %s holds %q: write the number of nodes the DaemonSet runs on, e.g. 1200", path, v)
	}
	return n, nil
}

// applyHint reads the fleet-size hint, if one is configured, and sets the
// fleet size from it. It reports whether a hint was applied.
func (b *Budget) applyHint() bool {
	path := b.cfg.FleetSizeHintPath
	if path == "" {
		return false
	}
	n, err := readFleetSizeHint(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		b.log.Info("no fleet-size hint: assuming the largest supported fleet until the DaemonSet is read; a simultaneous start is slower but stays inside the fleet budget",
			"path", path, "assumed_fleet_size", b.cfg.AssumedFleetSize)
		return false
	case err != nil:
		b.log.Warn("fleet-size hint not used: assuming the largest supported fleet until the DaemonSet is read", "path", path,
			"assumed_fleet_size", b.cfg.AssumedFleetSize, "err", err)
		return false
	}
	b.setFleetSize(n, SourceHint)
	return true
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
			b.setFleetSize(n, SourceDaemonSet)
		}
		b.markSizeKnown()
		t := b.clock.NewTimer(b.refreshInterval())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}
