package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/testpki"
)

// TestMisconfiguredStartCostsTheApiserverNothing starts the real binary,
// built with go build, against a real kube-apiserver with an audit log, once
// per local configuration problem. Each start must exit with code 2 and a
// line saying what to fix, having sent no request at all: a DaemonSet whose
// pods crash-loop on a bad setting then costs the apiserver nothing per
// restart. A correctly configured start of the same binary as the same user
// does show up in the audit log, so the zero is not an artefact of the test.
func TestMisconfiguredStartCostsTheApiserverNothing(t *testing.T) {
	bin := agentbin.Build(t)
	const user = "agent-crashloop"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartT(ctx, t, controlplane.Options{Users: []string{user}, Audit: true})

	// A real receiver, so that the well-configured agent stops cleanly
	// with its final export.
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})

	dir := t.TempDir()
	ca := filepath.Join(dir, "kubelet-ca.crt")
	_, kubeletCrt, err := testpki.KubeletSelfSigned("node-1")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, ca, kubeletCrt)
	notPEM := filepath.Join(dir, "not-pem.crt")
	writeFile(t, notPEM, []byte("this is not a certificate\n"))
	missing := filepath.Join(dir, "missing")
	base := map[string]string{
		"NODE_NAME":                   "node-1",
		"KUBECONFIG":                  cp.Kubeconfig(t, user),
		"FLEETAGENT_FLEET_SIZE":       "1",
		"FLEETAGENT_KUBELET_ENDPOINT": "https://127.0.0.1:" + agentbin.FreePort(t),
		"FLEETAGENT_ADMIN_ADDRESS":    "127.0.0.1:0",
		// Short, so that an agent that does start (the old behaviour)
		// reaches the kubelet client within the test's deadline.
		"FLEETAGENT_SYNC_TIMEOUT":     "3s",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + recv.GRPCAddr(),
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // each must appear in stderr
	}{
		{"skip verify with an explicit CA file",
			map[string]string{"FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY": "true", "FLEETAGENT_KUBELET_CA_FILE": ca},
			[]string{"FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY", "FLEETAGENT_KUBELET_CA_FILE"}},
		{"CA file missing", map[string]string{"FLEETAGENT_KUBELET_CA_FILE": missing},
			[]string{`kubelet CA file "` + missing + `"`}},
		{"CA file not PEM", map[string]string{"FLEETAGENT_KUBELET_CA_FILE": notPEM},
			[]string{`kubelet CA file "` + notPEM + `"`, "PEM"}},
		{"token file missing", map[string]string{"FLEETAGENT_KUBELET_TOKEN_FILE": missing},
			[]string{`kubelet token file "` + missing + `"`}},
		{"OTLP protocol", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
			[]string{`"thrift"`, "OTEL_EXPORTER_OTLP_PROTOCOL"}},
		{"OTLP CA certificate missing", map[string]string{"OTEL_EXPORTER_OTLP_CERTIFICATE": missing},
			[]string{"OTEL_EXPORTER_OTLP_CERTIFICATE", missing}},
		{"several at once", map[string]string{"FLEETAGENT_KUBELET_CA_FILE": notPEM, "FLEETAGENT_KUBELET_TOKEN_FILE": missing, "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
			[]string{"kubelet CA file", "kubelet token file", "OTEL_EXPORTER_OTLP_PROTOCOL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := merge(base, tc.env)
			rctx, rcancel := context.WithTimeout(ctx, time.Minute)
			defer rcancel()
			cmd := exec.CommandContext(rctx, bin)
			cmd.Env = envList(env)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Errorf("exit: %v, want code 2\n%s", err, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not name %q:\n%s", w, stderr.String())
				}
			}
			// One line per problem, each saying what to do.
			if n := strings.Count(stderr.String(), "\n  - "); n != len(tc.want) && tc.name == "several at once" {
				t.Errorf("%d problem lines, want %d:\n%s", n, len(tc.want), stderr.String())
			}
		})
	}
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	if ev := controlplane.UserEvents(events, user); len(ev) != 0 {
		t.Errorf("misconfigured starts sent %d apiserver requests, want 0; first: %s %s", len(ev), ev[0].Verb, ev[0].RequestURI)
	}

	// The control: the same binary, user and kubeconfig, well configured,
	// is seen by the apiserver.
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = envList(base)
	// A file, not a buffer: the process writes to it directly, so reading
	// it while the agent runs needs no lock.
	logFile, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logs := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	seen := 0
	for deadline := time.Now().Add(time.Minute); seen == 0 && time.Now().Before(deadline); {
		select {
		case err := <-exited:
			t.Fatalf("well-configured agent exited: %v\n%s", err, logs())
		case <-time.After(200 * time.Millisecond):
		}
		events, err := cp.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		seen = len(controlplane.UserEvents(events, user))
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("well-configured agent after SIGTERM: %v\n%s", err, logs())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		t.Errorf("well-configured agent did not stop within a minute of SIGTERM\n%s", logs())
	}
	if seen == 0 {
		t.Fatalf("the well-configured agent sent no request within a minute: the audit check proves nothing\n%s", logs())
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// envList is the process environment for m: PATH and HOME only from the
// test's own, so nothing else of the test machine configures the agent.
func envList(m map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}
