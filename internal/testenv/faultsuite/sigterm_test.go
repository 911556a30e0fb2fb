package faultsuite

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestSIGTERM runs the real binary and sends it SIGTERM at every logged
// phase of its start-up, while it waits for an informer sync that cannot
// happen, while it runs, and while an export is in flight to a slow
// collector. Each time it must exit 0 within --shutdown-timeout, with no
// panic on stderr, having logged that it stopped.
func TestSIGTERM(t *testing.T) {
	bin := agentbin.Build(t)
	checkLeaksAtEnd(t)
	const shutdownTimeout = 6 * time.Second
	nodes := cluster.NodeNames()
	okConfig := cp.Kubeconfig(t, sigUser)
	forbidden := cp.Kubeconfig(t, norbac)

	type trigger struct {
		name       string
		kubeconfig string
		// at returns true for the log line after which SIGTERM is sent.
		at    func(msg, component string) bool
		after time.Duration // extra wait after the line
		slow  time.Duration // receiver delay (an export in flight)
	}
	component := func(c string) func(string, string) bool {
		return func(msg, comp string) bool { return msg == "component started" && comp == c }
	}
	triggers := []trigger{
		{name: "at starting", kubeconfig: okConfig, at: func(msg, _ string) bool { return msg == "starting" }},
		{name: "after admin server", kubeconfig: okConfig, at: component("admin server")},
		{name: "after self-metrics", kubeconfig: okConfig, at: component("self-metrics")},
		{name: "after Kubernetes state (exporter starting)", kubeconfig: okConfig, at: component("Kubernetes state")},
		{name: "during a sync wait that cannot succeed", kubeconfig: forbidden, at: component("Kubernetes state"), after: 2 * time.Second},
		{name: "running", kubeconfig: okConfig, at: func(msg, _ string) bool { return msg == "started" }, after: 1500 * time.Millisecond},
		{name: "during an export", kubeconfig: okConfig, at: func(msg, _ string) bool { return msg == "started" }, after: 1200 * time.Millisecond, slow: 2 * time.Second},
	}
	for i, tr := range triggers {
		t.Run(tr.name, func(t *testing.T) {
			recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
			recv.SetDelay(tr.slow)
			kub := startKubelet(t, "", nil)

			cmd := exec.Command(bin, "--kubeconfig="+tr.kubeconfig, "--log-level=debug",
				"--shutdown-timeout="+shutdownTimeout.String(), "--sync-timeout=30s", "--collection-interval=1s")
			cmd.Env = agentbin.Env(nodes[6+i%3], kub.URL(), "127.0.0.1:0", recv.GRPCAddr(),
				"FLEETAGENT_FLEET_QPS=20", "FLEETAGENT_FLEET_SIZE=2", "FLEETAGENT_KILL_SWITCH_FILE=")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// A phase that is never logged must not hang the suite.
			var killed atomic.Bool
			watchdog := time.AfterFunc(90*time.Second, func() { killed.Store(true); _ = cmd.Process.Kill() })
			defer watchdog.Stop()
			var lines []string
			var signalled time.Time
			sc := bufio.NewScanner(stderr)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				lines = append(lines, line)
				if !signalled.IsZero() {
					continue
				}
				var rec struct {
					Msg       string `json:"msg"`
					Component string `json:"component"`
				}
				if json.Unmarshal([]byte(line), &rec) == nil && tr.at(rec.Msg, rec.Component) {
					time.Sleep(tr.after)
					signalled = time.Now()
					if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
						t.Fatal(err)
					}
				}
			}
			err = cmd.Wait()
			exited := time.Since(signalled)
			out := strings.Join(lines, "\n")
			if signalled.IsZero() {
				if killed.Load() {
					t.Fatalf("the phase to signal was not logged within 90s (agent killed):\n%s", out)
				}
				t.Fatalf("the agent exited (%v) before the phase to signal was logged:\n%s", err, out)
			}
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("exit code %d (%v) after SIGTERM, want 0:\n%s", code, err, out)
			}
			// Process exit adds a little to the shutdown itself.
			if exited > shutdownTimeout+2*time.Second {
				t.Errorf("exited %v after SIGTERM; --shutdown-timeout is %v", exited, shutdownTimeout)
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Errorf("panic or stack trace on stderr:\n%s", out)
			}
			if !strings.Contains(out, `"msg":"stopped"`) {
				t.Errorf("no \"stopped\" line:\n%s", out)
			}
			t.Logf("exited %v after SIGTERM; %d log lines; receiver accepted %d exports", exited.Round(time.Millisecond), len(lines), recv.Stats().Accepted)
		})
	}
}
