package faultsuite

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/testlog"
)

// TestSeriesKeepIdentityAcrossKillSwitch runs the real binary and turns the
// kill switch on and off again. While it is on the Kubernetes state is stale
// (the pod-state series stop), but the kubelet series of the node's pods keep
// exactly the resource they had (workload names and uids, labels, container
// ids): no series changes identity because of the agent's own state, before,
// during or after.
func TestSeriesKeepIdentityAcrossKillSwitch(t *testing.T) {
	bin := agentbin.Build(t)
	checkLeaksAtEnd(t)
	node := cluster.NodeNames()[12]
	pods := agentrig.PodsOn(t, cp, node)
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
	kub := startKubelet(t, node, pods)
	kill := filepath.Join(t.TempDir(), "kill-switch")
	logs := &testlog.Buffer{}
	cmd := exec.Command(bin, "--kubeconfig="+cp.Kubeconfig(t, identUser), "--collection-interval=1s",
		"--shutdown-timeout=10s", "--kill-switch-file="+kill, "--fleet-size=1", "--pod-labels=app")
	cmd.Env = agentbin.Env(node, kub.URL(), "127.0.0.1:0", recv.GRPCAddr())
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})

	// kubeletSeries renders the resource of every kubelet pod and container
	// series of an export, one line per series.
	kubeletSeries := func(pts []otlpreceiver.Point) string {
		var lines []string
		for _, p := range pts {
			if p.Metric != "k8s.pod.cpu.usage" && p.Metric != "container.cpu.usage" {
				continue
			}
			var kv []string
			for k, v := range p.Resource {
				kv = append(kv, k+"="+v)
			}
			sort.Strings(kv)
			lines = append(lines, p.Metric+"{"+strings.Join(kv, ",")+"}")
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	// state reports whether the latest export has pod-state series (the
	// state is fresh) and its kubelet series.
	latest := func() (fresh bool, series string) {
		ex := recv.Exports()
		if len(ex) == 0 {
			return false, ""
		}
		pts := ex[len(ex)-1].Points
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) > 0, kubeletSeries(pts)
	}

	var before string
	agentrig.WaitFor(t, time.Minute, "an export with fresh state and workload attributes", func() bool {
		fresh, s := latest()
		before = s
		return fresh && strings.Contains(s, "k8s.pod.uid=") && (strings.Contains(s, "k8s.replicaset.name=") || strings.Contains(s, "k8s.statefulset.name=") || strings.Contains(s, "k8s.daemonset.name="))
	}, logs.String)
	if n := strings.Count(before, "k8s.pod.cpu.usage{"); n != len(pods) {
		t.Fatalf("%d pod series, want %d (the node's pods):\n%s", n, len(pods), before)
	}

	if err := os.WriteFile(kill, []byte("on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stale := 0
	agentrig.WaitFor(t, time.Minute, "three exports with the state stale", func() bool {
		fresh, s := latest()
		if fresh || s == "" {
			return false
		}
		if s != before {
			t.Fatalf("kubelet series changed identity with the kill switch on:\nbefore:\n%s\nduring:\n%s", before, s)
		}
		stale++
		return stale >= 3
	}, logs.String)

	if err := os.WriteFile(kill, []byte("off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agentrig.WaitFor(t, time.Minute, "fresh state after the kill switch is off", func() bool {
		fresh, s := latest()
		if fresh && s != before {
			t.Fatalf("kubelet series changed identity after the kill switch:\nbefore:\n%s\nafter:\n%s", before, s)
		}
		return fresh
	}, logs.String)
}
