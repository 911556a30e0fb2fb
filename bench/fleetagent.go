package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/informer"
	"github.com/fleetagent/fleetagent/limiter"
)

// The agent's own DaemonSet, from which the limiter reads the fleet size
// as it does in a cluster (agent default: $POD_NAMESPACE/fleetagent).
const (
	fleetNamespace = "fleetagent"
	fleetDaemonSet = "fleetagent"
)

// FleetAgent is the product as shipped: node-scoped informers (pods by
// spec.nodeName, the own Node by name) behind the fleet-wide limiter, both
// with their default configuration, the fleet size read from the
// fleet-size hint an install writes (deploy/base) and refined from the
// agent's DaemonSet.
func FleetAgent() Strategy {
	return Strategy{Name: "fleetagent", Watches: 2, FleetQPS: agent.DefaultConfig().FleetQPS, New: func(cfg *rest.Config, node string, env Env) (Agent, error) {
		k, err := agent.NewKube(cfg, limiter.Config{DaemonSetNamespace: fleetNamespace, DaemonSetName: fleetDaemonSet, FleetSizeHintPath: env.FleetSizeHintPath},
			informer.Options{NodeName: node, SyncTimeout: max(env.SyncTimeout, informer.DefaultSyncTimeout)}, max(env.SyncTimeout, agent.DefaultConfig().SyncTimeout))
		if err != nil {
			return nil, fmt.Errorf("fleetagent %s: %w", node, err)
		}
		return k, nil
	}}
}

// writeFleetSizeHint writes the fleet-size hint as an install does: the
// number of nodes, in a file the agents read with no apiserver request.
func writeFleetSizeHint(dir string, nodes int) (string, error) {
	path := filepath.Join(dir, "fleet-size-hint")
	if err := os.WriteFile(path, []byte(strconv.Itoa(nodes)+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("bench: write the fleet-size hint: %w", err)
	}
	return path, nil
}

// createFleetDaemonSet writes the DaemonSet whose status tells each
// limiter the fleet size. No controller runs, so its status is set here.
func createFleetDaemonSet(ctx context.Context, admin kubernetes.Interface, nodes int) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fleetNamespace}}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bench: create namespace %s: %w", fleetNamespace, err)
	}
	labels := map[string]string{"app.kubernetes.io/name": "fleetagent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: fleetDaemonSet, Namespace: fleetNamespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "fleetagent", Image: "fleetagent:bench"}}},
			},
		},
	}
	got, err := admin.AppsV1().DaemonSets(fleetNamespace).Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("bench: create daemonset: %w", err)
	}
	n := int32(nodes)
	got.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: n, CurrentNumberScheduled: n, NumberReady: n, NumberAvailable: n, UpdatedNumberScheduled: n}
	if _, err := admin.AppsV1().DaemonSets(fleetNamespace).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("bench: daemonset status: %w", err)
	}
	return nil
}
