package agent

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// runKubeletSource is startKube's background work with --kube-source=kubelet:
// it polls the kubelet's /pods every collection interval until ctx ends,
// waits (at most the sync timeout) for the first list to mark the agent
// synced, and, with --node-get-at-start, reads the Node once through the
// budget. Nothing else touches the apiserver: the budget is not even
// started without the Node GET.
func (a *Agent) runKubeletSource(ctx context.Context) {
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		a.kstate.Run(ctx)
	}()
	if a.cfg.NodeGetAtStart {
		go a.getNodeOnce(ctx)
	}
	sctx, cancel := context.WithTimeout(ctx, a.cfg.SyncTimeout)
	err := a.kstate.WaitForSync(sctx)
	cancel()
	if ctx.Err() == nil {
		a.mu.Lock()
		a.synced, a.syncErr = err == nil, err
		a.mu.Unlock()
		if err != nil {
			a.log.Warn("no pod list from the kubelet by the sync deadline; running degraded", "err", err)
		} else {
			a.log.Info("kubelet source synced", "pods", len(a.kstate.Pods()))
		}
	}
	<-polled
}

// getNodeOnce starts the budget and GETs this node's Node object from the
// apiserver's watch cache (resourceVersion=0), paid from the budget like
// every request of the informer mode (the kill switch, backoff and breaker
// hold it too), retrying until one succeeds or ctx ends. The Node then
// feeds the node collector (conditions, allocatable, capacity) as read at
// start; it is never refreshed.
func (a *Agent) getNodeOnce(ctx context.Context) {
	log := a.log.With("component", "kubelet-source")
	if err := a.budget.Start(ctx); err != nil {
		log.Warn("budget did not start; no Node object", "err", err)
		return
	}
	cs, err := kubernetes.NewForConfig(a.kube.RESTConfig())
	if err != nil {
		log.Warn("no Node object", "err", err)
		return
	}
	wait := time.Second
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{ResourceVersion: "0"})
		if err == nil {
			a.kstate.SetNode(n)
			log.Info("Node object read once at start", "node", n.Name)
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("Node GET failed; retrying through the budget", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-a.clk.After(wait):
		}
		wait = min(2*wait, 5*time.Minute)
	}
}

// fleetSizeHint is the fleet size the kubelet source's budget assumes with
// no fixed --fleet-size: the fleet-size hint file's number when it holds
// one, else --assumed-fleet-size. No apiserver request reads it.
func fleetSizeHint(cfg Config) int {
	if cfg.FleetSizeHintFile != "" {
		if b, err := os.ReadFile(cfg.FleetSizeHintFile); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
				return n
			}
		}
	}
	return cfg.AssumedFleetSize
}
