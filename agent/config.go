package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/exporter"
	"github.com/fleetagent/fleetagent/limiter"
)

// Version is the agent's version, stamped at build time with
// -ldflags "-X github.com/fleetagent/fleetagent/agent.Version=...".
var Version = "dev"

// Commit is the source commit the agent was built from, stamped like
// Version with -X github.com/fleetagent/fleetagent/agent.Commit=....
var Commit = "unknown"

// Config is the agent's whole configuration. DefaultConfig gives the
// defaults; ParseFlags fills it from flags with environment fallbacks;
// Validate reports every problem at once.
type Config struct {
	// NodeName is the node this agent watches (downward API spec.nodeName).
	NodeName string
	// Kubeconfig is a kubeconfig path; empty means in-cluster config.
	Kubeconfig string
	// FleetQPS is the request rate the whole DaemonSet may spend on the
	// apiserver together; each agent takes FleetQPS / fleet size.
	FleetQPS float64
	// FleetSize fixes the fleet size; 0 reads it from DaemonSet's status.
	FleetSize int
	// DaemonSet is the agent's own DaemonSet as namespace/name, for
	// fleet-size discovery.
	DaemonSet string
	// FleetSizeHintFile holds the fleet size as a number, written at install
	// or upgrade (a key of the mounted control ConfigMap). When FleetSize is
	// 0 it is read with no apiserver request and sets the start-up spread
	// until the DaemonSet is read. Empty means no hint.
	FleetSizeHintFile string
	// AssumedFleetSize is the fleet size assumed when FleetSize is 0 and no
	// hint can be read, until the DaemonSet is read.
	AssumedFleetSize int
	// KubeletEndpoint is the base URL of the node-local kubelet.
	KubeletEndpoint string
	// KubeletCAFile verifies the kubelet's serving certificate (PEM CA
	// certificates); empty means the system roots.
	KubeletCAFile string
	// KubeletTokenFile is the bearer token sent to the kubelet; empty
	// sends none.
	KubeletTokenFile string
	// KubeletTLSServerName is the name the kubelet's serving certificate
	// must carry when it is not the endpoint's host (self-signed kubelet
	// certificates name only the node's hostname).
	KubeletTLSServerName string
	// KubeletInsecureSkipVerify skips verifying the kubelet's serving
	// certificate. It excludes KubeletCAFile and KubeletTLSServerName.
	KubeletInsecureSkipVerify bool
	// KubeletReadyTimeout bounds how long /readyz waits for the first
	// successful kubelet scrape once the collectors have started; after it
	// the agent reports ready but degraded.
	KubeletReadyTimeout time.Duration
	// KillSwitchFile stops all apiserver traffic while it exists with a
	// content other than "", "0", "false" or "off".
	KillSwitchFile string
	// AdminAddress serves /healthz, /readyz and /metrics.
	AdminAddress string
	// CollectionInterval is how often metrics are collected and exported.
	CollectionInterval time.Duration
	// CardinalityLimit is the most series one metric may have; the SDK
	// folds the rest into one otel.metric.overflow series.
	CardinalityLimit int
	// SyncTimeout bounds the wait for the informers' first sync; after it
	// the agent runs degraded rather than exiting.
	SyncTimeout time.Duration
	// ShutdownTimeout bounds the whole stop sequence, final export included.
	// Keep it below the pod's terminationGracePeriodSeconds.
	ShutdownTimeout time.Duration
	// InformerMode is "list-watch" or "watch-list".
	InformerMode string
	// KubeSource is where Kubernetes state (this node's pods, its Node)
	// comes from: KubeSourceInformer (node-scoped informers on the
	// apiserver) or KubeSourceKubelet (the node's kubelet /pods, no
	// apiserver request).
	KubeSource string
	// NodeGetAtStart, with KubeSourceKubelet, reads this node's Node object
	// once at start with a cache-served GET paid from the fleet budget, for
	// the node conditions, allocatable and capacity the kubelet does not
	// serve.
	NodeGetAtStart bool
	// PodLabels are the pod label keys exported as attributes.
	PodLabels []string
	// LogLevel is debug, info, warn or error.
	LogLevel string
}

// DefaultConfig returns the defaults an operator gets with no flags.
func DefaultConfig() Config {
	return Config{
		FleetQPS:           100,
		FleetSizeHintFile:  "/etc/fleetagent/control/fleet-size-hint",
		AssumedFleetSize:   limiter.MaxFleetSize,
		KillSwitchFile:     "/etc/fleetagent/control/kill-switch",
		AdminAddress:       ":9808",
		CollectionInterval: 30 * time.Second,
		CardinalityLimit:   exporter.DefaultCardinalityLimit,
		SyncTimeout:        2 * time.Minute,
		ShutdownTimeout:    20 * time.Second,
		// Two minutes: at the default 30s interval, the start-up probe and
		// three or four scrapes, so a restarting kubelet (healthy again
		// 5.4 s after start on the test node, shared/realnode.md) does not
		// trip it; and a node whose kubelet is broken holds a
		// maxUnavailable=1 rollout for two minutes, not forever.
		KubeletReadyTimeout: 2 * time.Minute,
		InformerMode:        "list-watch",
		KubeSource:          KubeSourceInformer,
		LogLevel:            "info",
	}
}

// The values of Config.KubeSource.
const (
	KubeSourceInformer = "informer"
	KubeSourceKubelet  = "kubelet"
)

// flagSpec ties a flag to its environment variable, so --help and the
// error messages name both.
type flagSpec struct {
	name, env, usage string
}

// fromEnv sets *p to the value of the environment variable env, parsed,
// when the variable is set (not empty). A value parse rejects leaves *p as
// it is and adds an error to errs: the variable, its value, and problem
// (what is wrong and what to give instead).
func fromEnv[T any](getenv func(string) string, errs *[]error, env string, p *T, parse func(string) (T, error), problem string) {
	v := getenv(env)
	if v == "" {
		return
	}
	x, err := parse(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q %s", env, v, problem))
		return
	}
	*p = x
}

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(s, 64) }

// ParseFlags parses args (without the program name) on top of the
// defaults, reading each flag's environment variable first so that a flag
// given on the command line wins. lookupEnv is os.LookupEnv outside tests.
// An environment variable set to "" counts as unset, except the kubelet CA
// and token files, where "" clears the default. It returns flag.ErrHelp
// after printing usage to out when asked for -help.
func ParseFlags(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, bool, error) {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("fleetagent", flag.ContinueOnError)
	fs.SetOutput(out)
	var version bool
	var podLabels string
	var errs []error

	str := func(p *string, s flagSpec) {
		if v := getenv(s.env); v != "" {
			*p = v
		}
		fs.StringVar(p, s.name, *p, s.usage+" (env "+s.env+")")
	}
	// clearable is str for settings whose empty value means something: the
	// variable set to "" replaces the default. It reports whether the
	// environment set it.
	clearable := func(p *string, s flagSpec) (fromEnv bool) {
		v, ok := lookupEnv(s.env)
		if ok {
			*p = v
		}
		fs.StringVar(p, s.name, *p, s.usage+" (env "+s.env+", which clears the default when set empty)")
		return ok
	}
	// The typed flags below take their variable's value when it is set
	// and parses, and otherwise record an error saying what to give.
	dur := func(p *time.Duration, s flagSpec) {
		fromEnv(getenv, &errs, s.env, p, time.ParseDuration, "is not a duration: use a value like 30s or 2m")
		fs.DurationVar(p, s.name, *p, s.usage+" (env "+s.env+")")
	}
	whole := func(p *int, s flagSpec, give string) {
		fromEnv(getenv, &errs, s.env, p, strconv.Atoi, "is not a whole number: "+give)
		fs.IntVar(p, s.name, *p, s.usage+" (env "+s.env+")")
	}
	boolean := func(p *bool, s flagSpec) {
		fromEnv(getenv, &errs, s.env, p, strconv.ParseBool, "is not a boolean: use true or false")
		fs.BoolVar(p, s.name, *p, s.usage+" (env "+s.env+")")
	}

	str(&cfg.NodeName, flagSpec{"node-name", "NODE_NAME", "name of the node this agent runs on; set it from the downward API (spec.nodeName). Required"})
	str(&cfg.Kubeconfig, flagSpec{"kubeconfig", "KUBECONFIG", "path to a kubeconfig; empty means the in-cluster service account"})
	fromEnv(getenv, &errs, "FLEETAGENT_FLEET_QPS", &cfg.FleetQPS, parseFloat, "is not a number: give the fleet-wide requests per second, e.g. 100")
	fs.Float64Var(&cfg.FleetQPS, "fleet-qps", cfg.FleetQPS, "apiserver requests per second the whole DaemonSet may spend together; each agent gets fleet-qps / fleet size (env FLEETAGENT_FLEET_QPS)")
	whole(&cfg.FleetSize, flagSpec{"fleet-size", "FLEETAGENT_FLEET_SIZE", "number of agents sharing the fleet budget; 0 reads the DaemonSet's desiredNumberScheduled"},
		"give the number of agents, or 0 to read it from the DaemonSet")
	if ns := getenv("POD_NAMESPACE"); ns != "" {
		cfg.DaemonSet = ns + "/fleetagent"
	}
	str(&cfg.DaemonSet, flagSpec{"daemonset", "FLEETAGENT_DAEMONSET", "the agent's own DaemonSet as namespace/name, read for the fleet size (default $POD_NAMESPACE/fleetagent)"})
	clearable(&cfg.FleetSizeHintFile, flagSpec{"fleet-size-hint-file", "FLEETAGENT_FLEET_SIZE_HINT_FILE",
		"file holding the number of agents (the control ConfigMap's fleet-size-hint key, set at install or upgrade), read with no apiserver request to spread the start until the DaemonSet is read; empty: no hint"})
	whole(&cfg.AssumedFleetSize, flagSpec{"assumed-fleet-size", "FLEETAGENT_ASSUMED_FLEET_SIZE",
		"fleet size assumed, when no fixed size or hint is given, until the DaemonSet is read: a smaller guess than the real fleet lets a simultaneous start exceed fleet-qps, a larger one only slows the start"},
		"give the largest number of agents the fleet may have")
	if ip := getenv("NODE_IP"); ip != "" {
		cfg.KubeletEndpoint = "https://" + net.JoinHostPort(ip, "10250")
	}
	str(&cfg.KubeletEndpoint, flagSpec{"kubelet-endpoint", "FLEETAGENT_KUBELET_ENDPOINT", "base URL of the node-local kubelet (default https://$NODE_IP:10250)"})
	cfg.KubeletCAFile, cfg.KubeletTokenFile = collector.DefaultCAFile, collector.DefaultTokenFile
	caFromEnv := clearable(&cfg.KubeletCAFile, flagSpec{"kubelet-ca-file", "FLEETAGENT_KUBELET_CA_FILE",
		"PEM file of the CA certificates the kubelet's serving certificate must chain to; the default, the service-account CA (the cluster CA), gives way to --kubelet-insecure-skip-verify; empty: the system roots"})
	clearable(&cfg.KubeletTokenFile, flagSpec{"kubelet-token-file", "FLEETAGENT_KUBELET_TOKEN_FILE", "bearer token file for the kubelet, the service-account token by default; empty sends none"})
	str(&cfg.KubeletTLSServerName, flagSpec{"kubelet-tls-server-name", "FLEETAGENT_KUBELET_TLS_SERVER_NAME",
		"name to verify in the kubelet's serving certificate instead of the endpoint's host; a kubelet's self-signed certificate names only the node's hostname"})
	boolean(&cfg.KubeletInsecureSkipVerify, flagSpec{"kubelet-insecure-skip-verify", "FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY",
		"do not verify the kubelet's serving certificate: needs no other setting, and the agent's token then goes to whoever answers at the kubelet endpoint"})
	dur(&cfg.KubeletReadyTimeout, flagSpec{"kubelet-ready-timeout", "FLEETAGENT_KUBELET_READY_TIMEOUT",
		"/readyz fails until a kubelet scrape has succeeded, for at most this long after the collectors start; then the agent is ready but degraded"})
	str(&cfg.KillSwitchFile, flagSpec{"kill-switch-file", "FLEETAGENT_KILL_SWITCH_FILE", "file that, when present with content other than off/false/0/empty, stops all apiserver traffic; empty disables the switch"})
	str(&cfg.AdminAddress, flagSpec{"admin-address", "FLEETAGENT_ADMIN_ADDRESS", "host:port serving /healthz, /readyz and /metrics"})
	// OTEL_METRIC_EXPORT_INTERVAL (milliseconds) is the interval when
	// neither the flag nor FLEETAGENT_COLLECTION_INTERVAL gives one.
	if v := getenv("OTEL_METRIC_EXPORT_INTERVAL"); v != "" && getenv("FLEETAGENT_COLLECTION_INTERVAL") == "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		// The bound is checked here: in a duration a larger value could
		// overflow.
		const hourMs = int64(time.Hour / time.Millisecond)
		switch {
		case err == nil && ms > 0 && ms <= hourMs:
			cfg.CollectionInterval = time.Duration(ms) * time.Millisecond
		case (err == nil && ms > hourMs) || (errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(v, "-")):
			errs = append(errs, fmt.Errorf("OTEL_METRIC_EXPORT_INTERVAL=%q is over an hour: use at most 3600000", v))
		default:
			errs = append(errs, fmt.Errorf("OTEL_METRIC_EXPORT_INTERVAL=%q is not a positive whole number of milliseconds: use e.g. 30000", v))
		}
	}
	dur(&cfg.CollectionInterval, flagSpec{"collection-interval", "FLEETAGENT_COLLECTION_INTERVAL", "how often to collect and export metrics (default OTEL_METRIC_EXPORT_INTERVAL, then 30s)"})
	whole(&cfg.CardinalityLimit, flagSpec{"cardinality-limit", "FLEETAGENT_CARDINALITY_LIMIT", "most series one metric may have per export; more fold into one otel.metric.overflow series"},
		"give the most series one metric may have")
	dur(&cfg.SyncTimeout, flagSpec{"sync-timeout", "FLEETAGENT_SYNC_TIMEOUT", "how long to wait for the first informer sync before running degraded"})
	dur(&cfg.ShutdownTimeout, flagSpec{"shutdown-timeout", "FLEETAGENT_SHUTDOWN_TIMEOUT", "bound on the stop sequence including the final export; keep below terminationGracePeriodSeconds"})
	str(&cfg.InformerMode, flagSpec{"informer-mode", "FLEETAGENT_INFORMER_MODE", "list-watch (cache-served LIST then WATCH) or watch-list (streaming list)"})
	str(&cfg.KubeSource, flagSpec{"kube-source", "FLEETAGENT_KUBE_SOURCE", "where this node's pods come from: informer (node-scoped informers on the apiserver's watch cache) or kubelet (the node's kubelet /pods: no apiserver request; no Node object unless --node-get-at-start)"})
	boolean(&cfg.NodeGetAtStart, flagSpec{"node-get-at-start", "FLEETAGENT_NODE_GET_AT_START",
		"with --kube-source=kubelet: read this node's Node object once at start (one cache-served GET paid from the fleet budget) for node conditions, allocatable and capacity"})
	podLabels = getenv("FLEETAGENT_POD_LABELS")
	fs.StringVar(&podLabels, "pod-labels", podLabels, "comma-separated pod label keys to export as attributes (env FLEETAGENT_POD_LABELS)")
	str(&cfg.LogLevel, flagSpec{"log-level", "FLEETAGENT_LOG_LEVEL", "debug, info, warn or error"})
	fs.BoolVar(&version, "version", false, "print the version and exit")

	fs.Usage = func() {
		fmt.Fprintf(out, "fleetagent %s: node telemetry agent exporting OTLP metrics at a flat apiserver cost per node.\n\n", Version)
		fmt.Fprintf(out, "Usage: fleetagent [flags]\n\nEvery flag falls back to the environment variable it names; a variable set to an empty value\ncounts as unset, except FLEETAGENT_KUBELET_CA_FILE (empty: verify against the system roots) and\nFLEETAGENT_KUBELET_TOKEN_FILE (empty: send no token), where it clears the default. OTLP export is\nconfigured by the standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers, TLS, compression,\ntimeout, protocol grpc or http/protobuf) and OTEL_RESOURCE_ATTRIBUTES.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		// Report the environment's problems too, not only the flag's.
		return cfg, false, errors.Join(append([]error{err}, errs...)...)
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q: fleetagent takes only flags (see --help)", fs.Args()))
	}
	// Skipping verification needs no other setting: the default CA file
	// gives way to it, a CA file given explicitly does not (Validate).
	caFromFlag := false
	fs.Visit(func(f *flag.Flag) { caFromFlag = caFromFlag || f.Name == "kubelet-ca-file" })
	if cfg.KubeletInsecureSkipVerify && !caFromEnv && !caFromFlag {
		cfg.KubeletCAFile = ""
	}
	for _, l := range strings.Split(podLabels, ",") {
		if l = strings.TrimSpace(l); l != "" {
			cfg.PodLabels = append(cfg.PodLabels, l)
		}
	}
	return cfg, version, errors.Join(errs...)
}

// Validate reports every problem with the configuration at once, each
// saying what to do about it.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.NodeName == "" {
		bad("node name is empty: set --node-name or NODE_NAME (in a DaemonSet, from the downward API fieldRef spec.nodeName)")
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			bad("kubeconfig %q cannot be read: %v: fix the path or leave it empty to use the in-cluster service account", c.Kubeconfig, err)
		}
	}
	// Written so that NaN, which compares false with everything, fails.
	if !(c.FleetQPS > 0 && c.FleetQPS <= 10000) {
		bad("fleet-qps %v is out of range: give the fleet-wide budget in requests per second, above 0 and at most 10000 (default 100)", c.FleetQPS)
	}
	if c.FleetSize > 0 && c.KubeSource != KubeSourceKubelet && c.FleetQPS > 0 && c.FleetQPS < limiter.MinFleetQPS(c.FleetSize) {
		bad("fleet-qps %v for fleet-size %d gives each agent one request every %.0f s, longer than the %v an informer's watch may follow its list by (the apiserver keeps 75 s of watch history): raise fleet-qps to at least %.0f",
			c.FleetQPS, c.FleetSize, float64(c.FleetSize)/c.FleetQPS, limiter.MaxTokenInterval, math.Ceil(limiter.MinFleetQPS(c.FleetSize)))
	}
	if c.FleetSize < 0 {
		bad("fleet-size %d is negative: give the number of agents, or 0 to read it from the DaemonSet", c.FleetSize)
	}
	if c.AssumedFleetSize < 1 {
		bad("assumed-fleet-size %d: give the largest number of agents the fleet may have, at least 1 (default %d)", c.AssumedFleetSize, limiter.MaxFleetSize)
	}
	if c.FleetSize == 0 && c.KubeSource != KubeSourceKubelet {
		if ns, name, ok := strings.Cut(c.DaemonSet, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			bad("daemonset %q is not namespace/name: set --daemonset or POD_NAMESPACE, or fix the fleet size with --fleet-size", c.DaemonSet)
		}
	}
	if err := checkKubeletEndpoint(c.KubeletEndpoint); err != nil {
		errs = append(errs, err)
	}
	if c.KubeletInsecureSkipVerify && c.KubeletCAFile != "" {
		bad("--kubelet-insecure-skip-verify (FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY) and --kubelet-ca-file %q (FLEETAGENT_KUBELET_CA_FILE) exclude each other: to skip verification unset the CA file or set it empty, to verify set skip-verify false", c.KubeletCAFile)
	}
	if c.KubeletInsecureSkipVerify && c.KubeletTLSServerName != "" {
		bad("--kubelet-insecure-skip-verify (FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY) and --kubelet-tls-server-name %q (FLEETAGENT_KUBELET_TLS_SERVER_NAME) exclude each other: a name is only checked when the certificate is verified", c.KubeletTLSServerName)
	}
	if c.KubeletReadyTimeout <= 0 {
		bad("kubelet ready timeout %v must be positive (default 2m)", c.KubeletReadyTimeout)
	}
	if c.AdminAddress != "" {
		if _, port, err := net.SplitHostPort(c.AdminAddress); err != nil {
			bad("admin address %q is not host:port: use e.g. :9808 or 127.0.0.1:9808", c.AdminAddress)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad("admin address %q has a bad port: use 0-65535", c.AdminAddress)
		}
	}
	if c.CardinalityLimit < 1 {
		bad("cardinality limit %d must be at least 1 (default %d: a 250-pod node with 10 containers per pod loses no series)", c.CardinalityLimit, exporter.DefaultCardinalityLimit)
	}
	if c.CollectionInterval < time.Second || c.CollectionInterval > time.Hour {
		bad("collection interval %v is out of range: use between 1s and 1h (default 30s)", c.CollectionInterval)
	}
	if c.SyncTimeout <= 0 {
		bad("sync timeout %v must be positive (default 2m)", c.SyncTimeout)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown timeout %v must be positive (default 20s)", c.ShutdownTimeout)
	}
	if c.InformerMode != "list-watch" && c.InformerMode != "watch-list" {
		bad("informer mode %q is unknown: use list-watch or watch-list", c.InformerMode)
	}
	switch c.KubeSource {
	case KubeSourceInformer:
		if c.NodeGetAtStart {
			bad("--node-get-at-start (FLEETAGENT_NODE_GET_AT_START) is for --kube-source=kubelet: the informers already watch the Node; drop it or set --kube-source=kubelet")
		}
	case KubeSourceKubelet:
	default:
		bad("kube source %q is unknown: set --kube-source (FLEETAGENT_KUBE_SOURCE) to informer (node-scoped informers on the apiserver) or kubelet (the node's kubelet /pods, no apiserver request)", c.KubeSource)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkKubeletEndpoint is the one check of the kubelet endpoint, used by
// Validate and by New before it builds the kubelet client.
func checkKubeletEndpoint(e string) error {
	if e == "" {
		return errors.New("kubelet endpoint is empty: set --kubelet-endpoint or NODE_IP (downward API status.hostIP)")
	}
	if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("kubelet endpoint %q is not an http(s) URL with a host: use e.g. https://10.0.0.5:10250", e)
	}
	return nil
}

// ParseLevel parses a --log-level value.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q is unknown: use debug, info, warn or error", s)
	}
	return l, nil
}
