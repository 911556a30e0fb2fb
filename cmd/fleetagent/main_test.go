package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Main(m))
}

// TestInvalidConfiguration: every bad flag or environment value makes the
// agent exit with code 2 before it contacts anything, with one error line
// naming the value (and the flag or variable it came from), and no panic or
// stack trace.
func TestInvalidConfiguration(t *testing.T) {
	base := map[string]string{
		"NODE_NAME":                   "n1",
		"FLEETAGENT_KUBELET_ENDPOINT": "http://127.0.0.1:10255",
		"FLEETAGENT_FLEET_SIZE":       "3",
	}
	missing := filepath.Join(t.TempDir(), "no-such-kubeconfig")
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string // every string must appear in stderr
	}{
		{"qps flag not a number", []string{"--fleet-qps=lots"}, nil, []string{`"lots"`, "fleet-qps"}},
		{"qps env not a number", nil, map[string]string{"FLEETAGENT_FLEET_QPS": "lots"}, []string{`FLEETAGENT_FLEET_QPS="lots"`, "not a number"}},
		{"qps zero", []string{"--fleet-qps=0"}, nil, []string{"fleet-qps 0 is out of range"}},
		{"qps too large", []string{"--fleet-qps=1e6"}, nil, []string{"fleet-qps 1e+06 is out of range"}},
		{"size env fraction", nil, map[string]string{"FLEETAGENT_FLEET_SIZE": "2.5"}, []string{`FLEETAGENT_FLEET_SIZE="2.5"`}},
		{"size negative", []string{"--fleet-size=-4"}, nil, []string{"fleet-size -4 is negative"}},
		{"interval flag without unit", []string{"--collection-interval=30"}, nil, []string{`"30"`, "collection-interval"}},
		{"interval env not a duration", nil, map[string]string{"FLEETAGENT_COLLECTION_INTERVAL": "fast"}, []string{`FLEETAGENT_COLLECTION_INTERVAL="fast"`, "30s"}},
		{"interval too short", []string{"--collection-interval=100ms"}, nil, []string{"collection interval 100ms is out of range"}},
		{"shutdown timeout env", nil, map[string]string{"FLEETAGENT_SHUTDOWN_TIMEOUT": "20"}, []string{`FLEETAGENT_SHUTDOWN_TIMEOUT="20"`}},
		{"shutdown timeout zero", []string{"--shutdown-timeout=0s"}, nil, []string{"shutdown timeout 0s must be positive"}},
		{"sync timeout negative", []string{"--sync-timeout=-1s"}, nil, []string{"sync timeout -1s must be positive"}},
		{"informer mode", []string{"--informer-mode=streaming"}, nil, []string{`informer mode "streaming" is unknown`}},
		{"log level env", nil, map[string]string{"FLEETAGENT_LOG_LEVEL": "loud"}, []string{`log level "loud" is unknown`}},
		{"kubelet endpoint scheme", []string{"--kubelet-endpoint=ftp://node:10250"}, nil, []string{`kubelet endpoint "ftp://node:10250"`}},
		{"node IP not an address", nil, map[string]string{"FLEETAGENT_KUBELET_ENDPOINT": "", "NODE_IP": "10.0.0.5:1"}, []string{`kubelet endpoint "https://[10.0.0.5:1]:10250"`}},
		{"admin port", []string{"--admin-address=:99999"}, nil, []string{`admin address ":99999" has a bad port`}},
		{"admin address without port", nil, map[string]string{"FLEETAGENT_ADMIN_ADDRESS": "localhost"}, []string{`admin address "localhost" is not host:port`}},
		{"kubeconfig missing", []string{"--kubeconfig=" + missing}, nil, []string{`kubeconfig "` + missing + `" cannot be read`}},
		{"daemonset not namespace/name", []string{"--fleet-size=0", "--daemonset=fleetagent"}, nil, []string{`daemonset "fleetagent" is not namespace/name`}},
		{"no node name", nil, map[string]string{"NODE_NAME": ""}, []string{"node name is empty", "NODE_NAME"}},
		{"unknown flag", []string{"--nodename=n1"}, nil, []string{"-nodename"}},
		{"stray argument", []string{"run"}, nil, []string{`unexpected arguments ["run"]`}},
		{"skip verify beside a CA file", []string{"--kubelet-insecure-skip-verify"}, map[string]string{"FLEETAGENT_KUBELET_CA_FILE": "/etc/kubelet-ca/ca.crt"},
			[]string{"--kubelet-insecure-skip-verify", `--kubelet-ca-file "/etc/kubelet-ca/ca.crt"`, "exclude each other"}},
		{"skip verify beside a server name", nil, map[string]string{"FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY": "true", "FLEETAGENT_KUBELET_TLS_SERVER_NAME": "node-1"},
			[]string{`--kubelet-tls-server-name "node-1"`}},
		{"skip verify env not a boolean", nil, map[string]string{"FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY": "yes please"}, []string{`FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY="yes please" is not a boolean`}},
		{"kubelet ready timeout env", nil, map[string]string{"FLEETAGENT_KUBELET_READY_TIMEOUT": "120"}, []string{`FLEETAGENT_KUBELET_READY_TIMEOUT="120" is not a duration`}},
		{"kubelet ready timeout zero", []string{"--kubelet-ready-timeout=0s"}, nil, []string{"kubelet ready timeout 0s must be positive"}},
		{"several at once", []string{"--informer-mode=x", "--log-level=y", "--fleet-qps=-1"}, nil,
			[]string{`informer mode "x"`, `log level "y"`, "fleet-qps -1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			var stdout, stderr bytes.Buffer
			code := run(tc.args, lookup(env), &stdout, &stderr)
			out := stderr.String()
			if code != 2 {
				t.Errorf("exit code %d, want 2; stderr:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr does not name %q:\n%s", w, out)
				}
			}
			for _, bad := range []string{"panic", "goroutine ", ".go:"} {
				if strings.Contains(out, bad) {
					t.Errorf("stderr carries %q (a stack trace?):\n%s", bad, out)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout is for --version only; got %q", stdout.String())
			}
		})
	}
}

// TestHelpAndVersion: --help and --version succeed without configuration.
func TestHelpAndVersion(t *testing.T) {
	none := lookup(nil)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, none, &stdout, &stderr); code != 0 {
		t.Errorf("--help exit code %d", code)
	}
	for _, w := range []string{"--fleet-qps", "FLEETAGENT_FLEET_QPS", "OTEL_EXPORTER_OTLP_"} {
		if !strings.Contains(stderr.String(), strings.TrimPrefix(w, "-")) {
			t.Errorf("--help does not mention %s:\n%s", w, stderr.String())
		}
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"--version"}, none, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "fleetagent ") {
		t.Errorf("--version: code %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

// lookup is os.LookupEnv over m.
func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}
