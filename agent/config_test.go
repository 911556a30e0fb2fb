package agent

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/exporter"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
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

// TestValidateFleetBudgetForFixedSize: a fixed fleet size whose share of
// fleet-qps leaves more than limiter.MaxTokenInterval between an agent's
// tokens is refused with the budget to set; kubelet mode, which runs no
// informers, is not held to it.
func TestValidateFleetBudgetForFixedSize(t *testing.T) {
	c := DefaultConfig()
	c.NodeName, c.KubeletEndpoint = "n1", "http://127.0.0.1:10255"
	c.FleetSize, c.FleetQPS = 5000, 50
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "one request every 100 s") || !strings.Contains(err.Error(), "at least 84") {
		t.Errorf("fleet-qps 50 for 5000 agents: want an error naming 100 s and 84, got %v", err)
	}
	c.FleetQPS = DefaultConfig().FleetQPS
	if err := c.Validate(); err != nil {
		t.Errorf("the default fleet-qps for 5000 agents: %v", err)
	}
	c.FleetQPS, c.KubeSource = 50, KubeSourceKubelet
	if err := c.Validate(); err != nil {
		t.Errorf("kubelet mode, fleet-qps 50 for 5000 agents: %v", err)
	}
}

func TestFlagErrorKeepsEnvErrors(t *testing.T) {
	_, _, err := ParseFlags([]string{"--fleet-qps=x"}, env(map[string]string{"FLEETAGENT_COLLECTION_INTERVAL": "y"}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "fleet-qps") || !strings.Contains(err.Error(), `FLEETAGENT_COLLECTION_INTERVAL="y"`) {
		t.Fatalf("want both the flag and the env error, got %v", err)
	}
}

// TestKubeletSkipVerifyNeedsNoOtherSetting: skipping verification with
// the default CA file in place is a working configuration (it used to end
// in client-go's "specifying a root certificates file with the insecure
// flag is not allowed"), while an explicit CA file beside it is a
// contradiction reported before anything starts.
func TestKubeletSkipVerifyNeedsNoOtherSetting(t *testing.T) {
	base := map[string]string{"NODE_NAME": "n1", "NODE_IP": "10.0.0.5", "FLEETAGENT_FLEET_SIZE": "3"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantCA  string
		wantErr []string
	}{
		{name: "env, default CA file", env: with("FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY", "true")},
		{name: "flag, default CA file", args: []string{"--kubelet-insecure-skip-verify"}, env: base},
		{name: "verify by default", env: base, wantCA: collector.DefaultCAFile},
		{name: "explicit CA file by env", env: with("FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY", "true", "FLEETAGENT_KUBELET_CA_FILE", "/etc/kubelet-ca/ca.crt"),
			wantCA: "/etc/kubelet-ca/ca.crt", wantErr: []string{"--kubelet-insecure-skip-verify", `--kubelet-ca-file "/etc/kubelet-ca/ca.crt"`, "exclude each other"}},
		{name: "explicit CA file by flag", args: []string{"--kubelet-insecure-skip-verify", "--kubelet-ca-file=/ca.pem"}, env: base,
			wantCA: "/ca.pem", wantErr: []string{`--kubelet-ca-file "/ca.pem"`}},
		{name: "explicit empty CA file", env: with("FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY", "true", "FLEETAGENT_KUBELET_CA_FILE", "")},
		{name: "server name", args: []string{"--kubelet-insecure-skip-verify", "--kubelet-tls-server-name=node-1"}, env: base,
			wantErr: []string{`--kubelet-tls-server-name "node-1"`, "exclude each other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := ParseFlags(tc.args, env(tc.env), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.KubeletCAFile != tc.wantCA {
				t.Errorf("CA file %q, want %q", cfg.KubeletCAFile, tc.wantCA)
			}
			err = cfg.Validate()
			if len(tc.wantErr) == 0 && err != nil {
				t.Errorf("rejected: %v", err)
			}
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not say %q", err, w)
				}
			}
		})
	}
}

// TestEmptyEnvClearsKubeletFiles: FLEETAGENT_KUBELET_CA_FILE and
// FLEETAGENT_KUBELET_TOKEN_FILE set to "" clear their defaults (system
// roots, no token), so a manifest configuring by environment can choose
// them; other variables set to "" count as unset.
func TestEmptyEnvClearsKubeletFiles(t *testing.T) {
	cfg, _, err := ParseFlags(nil, env(map[string]string{"FLEETAGENT_KUBELET_CA_FILE": "", "FLEETAGENT_KUBELET_TOKEN_FILE": "", "FLEETAGENT_LOG_LEVEL": ""}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KubeletCAFile != "" || cfg.KubeletTokenFile != "" {
		t.Errorf("CA file %q, token file %q: want both cleared", cfg.KubeletCAFile, cfg.KubeletTokenFile)
	}
	if cfg.LogLevel != "info" {
		t.Errorf("FLEETAGENT_LOG_LEVEL=\"\" gave log level %q, want the default info", cfg.LogLevel)
	}
	cfg, _, err = ParseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KubeletCAFile != collector.DefaultCAFile || cfg.KubeletTokenFile != collector.DefaultTokenFile {
		t.Errorf("unset: CA file %q, token file %q: want the service-account mounts", cfg.KubeletCAFile, cfg.KubeletTokenFile)
	}
	var help bytes.Buffer
	_, _, _ = ParseFlags([]string{"--help"}, env(nil), &help)
	for _, want := range []string{"FLEETAGENT_KUBELET_CA_FILE (empty: verify against the system roots)", "FLEETAGENT_KUBELET_TOKEN_FILE (empty: send no token)",
		"-kubelet-tls-server-name", "-kubelet-ready-timeout", "FLEETAGENT_KUBELET_READY_TIMEOUT"} {
		if !strings.Contains(strings.Join(strings.Fields(help.String()), " "), want) {
			t.Errorf("--help does not say %q", want)
		}
	}
}

func TestValidateKubeletReadyTimeout(t *testing.T) {
	c := DefaultConfig()
	c.NodeName, c.FleetSize, c.KubeletEndpoint = "n1", 3, "http://127.0.0.1:10255"
	c.KubeletReadyTimeout = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "kubelet ready timeout 0s must be positive") {
		t.Fatalf("want a ready-timeout error, got %v", err)
	}
}

// TestExportIntervalFromOTELVariable: OTEL_METRIC_EXPORT_INTERVAL (ms) sets
// the collection interval unless --collection-interval or
// FLEETAGENT_COLLECTION_INTERVAL does; a bad value is reported.
func TestExportIntervalFromOTELVariable(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want time.Duration
		err  string
	}{
		{"otel variable", nil, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "15000"}, 15 * time.Second, ""},
		{"flag wins", []string{"--collection-interval=10s"}, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "15000"}, 10 * time.Second, ""},
		{"own variable wins", nil, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "15000", "FLEETAGENT_COLLECTION_INTERVAL": "20s"}, 20 * time.Second, ""},
		{"default", nil, nil, 30 * time.Second, ""},
		{"bad", nil, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "15s"}, 0, `OTEL_METRIC_EXPORT_INTERVAL="15s" is not a positive whole number of milliseconds`},
		{"over an hour", nil, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "99999999999999999999"}, 0, `is over an hour`},
		{"negative", nil, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "-99999999999999999999"}, 0, `is not a positive whole number of milliseconds`},
		{"too large for a duration", nil, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "10000000000000"}, 0, `OTEL_METRIC_EXPORT_INTERVAL="10000000000000" is over an hour: use at most 3600000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := map[string]string{"NODE_NAME": "n1"}
			for k, v := range tc.env {
				e[k] = v
			}
			cfg, _, err := ParseFlags(tc.args, env(e), &bytes.Buffer{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.CollectionInterval != tc.want {
				t.Errorf("collection interval %v, want %v", cfg.CollectionInterval, tc.want)
			}
		})
	}
}

// TestCardinalityLimitFlag: the default, the flag, the variable and a bad value.
func TestCardinalityLimitFlag(t *testing.T) {
	cfg, _, err := ParseFlags(nil, env(map[string]string{"NODE_NAME": "n1"}), &bytes.Buffer{})
	if err != nil || cfg.CardinalityLimit != exporter.DefaultCardinalityLimit {
		t.Fatalf("default %d, err %v", cfg.CardinalityLimit, err)
	}
	cfg, _, err = ParseFlags([]string{"--cardinality-limit=500"}, env(map[string]string{"NODE_NAME": "n1", "FLEETAGENT_CARDINALITY_LIMIT": "700"}), &bytes.Buffer{})
	if err != nil || cfg.CardinalityLimit != 500 {
		t.Fatalf("flag: %d, err %v", cfg.CardinalityLimit, err)
	}
	cfg, _, err = ParseFlags(nil, env(map[string]string{"NODE_NAME": "n1", "FLEETAGENT_CARDINALITY_LIMIT": "700"}), &bytes.Buffer{})
	if err != nil || cfg.CardinalityLimit != 700 {
		t.Fatalf("variable: %d, err %v", cfg.CardinalityLimit, err)
	}
	cfg.CardinalityLimit = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "cardinality limit 0") {
		t.Errorf("Validate(limit 0) = %v", err)
	}
}

// TestKubeSourceFlag: --kube-source and --node-get-at-start parse from
// flags and the environment; an unknown source, and the Node GET without
// the kubelet source, are refused with what to set; the kubelet source
// needs no DaemonSet (it never reads it).
func TestKubeSourceFlag(t *testing.T) {
	cfg, _, err := ParseFlags([]string{"--node-name=n", "--kube-source=kubelet"}, env(map[string]string{"FLEETAGENT_NODE_GET_AT_START": "true"}), io.Discard)
	if err != nil || cfg.KubeSource != KubeSourceKubelet || !cfg.NodeGetAtStart {
		t.Fatalf("parsed %q, node GET %v, err %v", cfg.KubeSource, cfg.NodeGetAtStart, err)
	}
	if def := DefaultConfig(); def.KubeSource != KubeSourceInformer || def.NodeGetAtStart {
		t.Errorf("defaults: source %q, node GET %v; want informer, false", def.KubeSource, def.NodeGetAtStart)
	}
	if _, _, err := ParseFlags(nil, env(map[string]string{"FLEETAGENT_NODE_GET_AT_START": "yes please"}), io.Discard); err == nil || !strings.Contains(err.Error(), "FLEETAGENT_NODE_GET_AT_START") {
		t.Errorf("bad boolean: %v", err)
	}
	base := DefaultConfig()
	base.NodeName, base.KubeletEndpoint = "n", "http://127.0.0.1:10255"

	c := base
	c.KubeSource = "apiserver"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `kube source "apiserver" is unknown`) || !strings.Contains(err.Error(), "--kube-source") {
		t.Errorf("unknown source: %v", err)
	}
	c = base
	c.FleetSize = 3
	c.NodeGetAtStart = true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--node-get-at-start") || !strings.Contains(err.Error(), "--kube-source=kubelet") {
		t.Errorf("node GET in informer mode: %v", err)
	}
	c = base
	c.KubeSource, c.NodeGetAtStart = KubeSourceKubelet, true
	if err := c.Validate(); err != nil {
		t.Errorf("kubelet source without a fleet size or DaemonSet: %v", err)
	}
}
