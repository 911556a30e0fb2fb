package agent

import (
	"bytes"
	"errors"
	"flag"
	"math"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseFlagsEnvFallbackAndFlagWins(t *testing.T) {
	cfg, _, err := ParseFlags(
		[]string{"--fleet-qps=20", "--collection-interval=10s"},
		env(map[string]string{
			"NODE_NAME": "n1", "NODE_IP": "10.1.2.3", "POD_NAMESPACE": "obs",
			"FLEETAGENT_FLEET_QPS": "99", "FLEETAGENT_POD_LABELS": "app, team ,",
		}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "n1" || cfg.FleetQPS != 20 || cfg.CollectionInterval != 10*time.Second {
		t.Fatalf("got %+v", cfg)
	}
	if cfg.KubeletEndpoint != "https://10.1.2.3:10250" || cfg.DaemonSet != "obs/fleetagent" {
		t.Fatalf("derived defaults wrong: %q %q", cfg.KubeletEndpoint, cfg.DaemonSet)
	}
	if strings.Join(cfg.PodLabels, "|") != "app|team" {
		t.Fatalf("pod labels %q", cfg.PodLabels)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
}

func TestParseFlagsBadEnvNamesVariable(t *testing.T) {
	_, _, err := ParseFlags(nil, env(map[string]string{
		"FLEETAGENT_FLEET_QPS": "lots", "FLEETAGENT_COLLECTION_INTERVAL": "5", "FLEETAGENT_FLEET_SIZE": "1.5",
	}), &bytes.Buffer{})
	for _, want := range []string{`FLEETAGENT_FLEET_QPS="lots"`, `FLEETAGENT_COLLECTION_INTERVAL="5"`, `FLEETAGENT_FLEET_SIZE="1.5"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestParseFlagsHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	_, _, err := ParseFlags([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("want ErrHelp, got %v", err)
	}
	for _, want := range []string{"--node-name", "NODE_NAME", "--fleet-qps", "OTEL_EXPORTER_OTLP_", "--kill-switch-file"} {
		if !strings.Contains(strings.ReplaceAll(out.String(), "  -", "  --"), want) {
			t.Errorf("help does not mention %s", want)
		}
	}
	_, version, err := ParseFlags([]string{"--version"}, env(nil), &out)
	if err != nil || !version {
		t.Fatalf("--version: %v %v", version, err)
	}
	if _, _, err := ParseFlags([]string{"--no-such-flag"}, env(nil), &out); err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("unknown flag: %v", err)
	}
	if _, _, err := ParseFlags([]string{"stray"}, env(nil), &out); err == nil || !strings.Contains(err.Error(), "stray") {
		t.Fatalf("stray argument: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Kubeconfig = "/no/such/kubeconfig"
	cfg.FleetQPS = 0
	cfg.FleetSize = -1
	cfg.KubeletEndpoint = "tcp://x"
	cfg.AdminAddress = "9808"
	cfg.CollectionInterval = time.Millisecond
	cfg.InformerMode = "poll"
	cfg.LogLevel = "loud"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"node name is empty", `kubeconfig "/no/such/kubeconfig"`, "fleet-qps 0", "fleet-size -1",
		`kubelet endpoint "tcp://x"`, `admin address "9808"`, "collection interval 1ms",
		`informer mode "poll"`, `log level "loud"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validate error does not mention %q:\n%v", want, err)
		}
	}
}

func TestValidateDaemonSetNeededOnlyForDiscovery(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.KubeletEndpoint = "n", "http://127.0.0.1:10255"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "daemonset") {
		t.Fatalf("want daemonset error, got %v", err)
	}
	cfg.FleetSize = 10
	if err := cfg.Validate(); err != nil {
		t.Fatalf("fixed fleet size needs no daemonset: %v", err)
	}
}

func TestValidateRejectsNaNFleetQPS(t *testing.T) {
	c := DefaultConfig()
	c.NodeName, c.FleetSize, c.KubeletEndpoint = "n1", 3, "http://127.0.0.1:10255"
	c.FleetQPS = math.NaN()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "fleet-qps NaN") {
		t.Fatalf("fleet-qps NaN: want an error, got %v", err)
	}
}

func TestFlagErrorKeepsEnvErrors(t *testing.T) {
	_, _, err := ParseFlags([]string{"--fleet-qps=x"}, env(map[string]string{"FLEETAGENT_COLLECTION_INTERVAL": "y"}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "fleet-qps") || !strings.Contains(err.Error(), `FLEETAGENT_COLLECTION_INTERVAL="y"`) {
		t.Fatalf("want both the flag and the env error, got %v", err)
	}
}
