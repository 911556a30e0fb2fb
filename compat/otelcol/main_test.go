package otelcol_test

import (
	"context"
	"os"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
)

// agentUser has exactly deploy/'s RBAC for the agent.
const agentUser = "system:serviceaccount:fleetagent:compat-agent"

var (
	cp      *controlplane.ControlPlane
	cluster *simcluster.Cluster
)

// TestMain starts one real control plane with one simulated node whose pods
// cover every owner kind the agent names (DaemonSet, StatefulSet, Job,
// Deployment through its ReplicaSet).
func TestMain(m *testing.M) {
	os.Exit(controlplane.Main(m, controlplane.MainOptions{
		Agents: []string{agentUser},
		Keep:   &cp,
		Setup: func(ctx context.Context, _ *controlplane.ControlPlane) (err error) {
			cluster, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: 1, PodsPerNode: 10, Namespaces: 2, NodePrefix: "compat-node"})
			return err
		},
	}))
}
