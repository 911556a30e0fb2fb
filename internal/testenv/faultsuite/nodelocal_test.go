package faultsuite

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/testlog"
)

// TestNodeLocalFirst starts the real binary, as shipped (the fleet size
// from the install's hint, then discovered from the DaemonSet; a long sync
// timeout), when the apiserver
// cannot be used: with the kill switch on, with the apiserver down, and
// with the agent's user rejected by API Priority and Fairness. Node-local
// telemetry must not wait for the apiserver: kubelet metrics reach the OTLP
// receiver within two collection intervals of the start. With the switch
// on, the audit log must show no request of the agent's user at all: not
// even the fleet-size read.
func TestNodeLocalFirst(t *testing.T) {
	bin := agentbin.Build(t)
	checkLeaksAtEnd(t)
	const interval = 5 * time.Second
	node := cluster.NodeNames()[9]

	run := func(t *testing.T, kubeconfig string, killSwitch string) (started time.Time, recv *otlpreceiver.Receiver, logs *testlog.Buffer, stop func()) {
		t.Helper()
		recv = otlpreceiver.StartT(t, otlpreceiver.Options{})
		kub := startKubelet(t, node, agentrig.PodsOn(t, cp, node))
		logs = &testlog.Buffer{}
		// The fleet-size hint an install writes into the control ConfigMap.
		hint := filepath.Join(t.TempDir(), "fleet-size-hint")
		if err := os.WriteFile(hint, []byte("10\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--kubeconfig="+kubeconfig, "--collection-interval="+interval.String(),
			"--sync-timeout=5m", "--shutdown-timeout=10s", "--kill-switch-file="+killSwitch)
		cmd.Env = agentbin.Env(node, kub.URL(), "127.0.0.1:0", recv.GRPCAddr(),
			"POD_NAMESPACE=fleetagent", // fleet size discovered, as shipped
			"FLEETAGENT_FLEET_SIZE_HINT_FILE="+hint)
		cmd.Stdout, cmd.Stderr = logs, logs
		started = time.Now()
		stop = agentbin.Start(t, cmd, logs)
		t.Cleanup(stop)
		return started, recv, logs, stop
	}
	// kubeletWithin waits for an export carrying the kubelet's node usage
	// and checks it arrived within two intervals of the start.
	kubeletWithin := func(t *testing.T, started time.Time, recv *otlpreceiver.Receiver, logs *testlog.Buffer) {
		t.Helper()
		var arrived time.Time
		agentrig.WaitFor(t, time.Minute, "an export with kubelet metrics", func() bool {
			for _, ex := range recv.Exports() {
				if len(otlpreceiver.Find(ex.Points, "k8s.node.cpu.usage", nil)) > 0 {
					arrived = ex.Received
					return true
				}
			}
			return false
		}, logs.String)
		if d := arrived.Sub(started); d > 2*interval {
			t.Errorf("first kubelet metrics %v after the start, want within two intervals (%v):\n%s", d.Round(time.Millisecond), 2*interval, logs)
		}
	}

	t.Run("kill switch on", func(t *testing.T) {
		kill := filepath.Join(t.TempDir(), "kill-switch")
		if err := os.WriteFile(kill, []byte("on\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		from := time.Now()
		started, recv, logs, stop := run(t, cp.Kubeconfig(t, localUser), kill)
		kubeletWithin(t, started, recv, logs)
		time.Sleep(interval) // one more interval with the switch on
		stop()
		if evs := userEventsSince(t, localUser, from); len(evs) != 0 {
			t.Errorf("%d apiserver requests with the kill switch on, want none; first: %s %s", len(evs), evs[0].Verb, evs[0].RequestURI)
		}
	})

	t.Run("apiserver down", func(t *testing.T) {
		// A loopback port nothing listens on: every connection is refused.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		kc := cp.Kubeconfig(t, localUser)
		cfg, err := clientcmd.LoadFromFile(kc)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cfg.Clusters {
			c.Server = "https://" + addr
		}
		if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
			t.Fatal(err)
		}
		started, recv, logs, _ := run(t, kc, filepath.Join(t.TempDir(), "kill-switch"))
		kubeletWithin(t, started, recv, logs)
	})

	t.Run("rejected by APF", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		lift, err := cp.RejectUsers(ctx, "fleetagent-fault-nodelocal", localUser, hogUser)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = lift(context.Background()) }()
		release, err := cp.HoldSeat(ctx, "fault-hog", hogUser)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		from := time.Now()
		started, recv, logs, _ := run(t, cp.Kubeconfig(t, localUser), filepath.Join(t.TempDir(), "kill-switch"))
		kubeletWithin(t, started, recv, logs)
		// The first request waits for its spread slot; once it is
		// rejected, kubelet metrics must go on.
		agentrig.WaitFor(t, time.Minute, "the agent's first request is rejected (429)", func() bool {
			for _, e := range userEventsSince(t, localUser, from) {
				if e.Code() == 429 {
					return true
				}
			}
			return false
		}, logs.String)
		n := len(recv.Exports())
		agentrig.WaitFor(t, 3*interval, "kubelet metrics after the rejection", func() bool {
			ex := recv.Exports()
			return len(ex) > n && len(otlpreceiver.Find(ex[len(ex)-1].Points, "k8s.node.cpu.usage", nil)) > 0
		}, logs.String)
	})
}

// userEventsSince is the audit log's requests by user since from.
func userEventsSince(t *testing.T, user string, from time.Time) []controlplane.AuditEvent {
	t.Helper()
	evs, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	return controlplane.Between(controlplane.UserEvents(evs, user), from, time.Time{})
}
