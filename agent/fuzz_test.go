package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/collector"
)

// FuzzParseFlags feeds arbitrary command lines and environment values to
// ParseFlags and Validate. Whatever an operator (or a templating mistake)
// puts there, parsing never panics, a bad environment value is reported
// with the variable's name and the value itself, and a configuration that
// Validate accepts is one the agent can run with.
func FuzzParseFlags(f *testing.F) {
	f.Add("--node-name=n1\x00--fleet-size=3", "50", "3", "30s", "info", "10.0.0.5")
	f.Add("", "", "", "", "", "")
	f.Add("--collection-interval=0s", "abc", "-1", "30", "loud", "::1")
	f.Add("--help", "", "", "", "", "")
	f.Add("--version", "1e400", "99999999999999999999", "-5m", "DEBUG", "not an ip")
	f.Add("stray\x00--fleet-qps=NaN", "NaN", "0x10", "1h1s", "warn+4", "10.0.0.5:1")
	f.Add("--kubelet-endpoint=ftp://x\x00--admin-address=:99999", "Inf", "2", "1ns", "error", "")
	f.Add("--informer-mode=watch\x00--daemonset=a/b/c", "0", "0", "300ms", "", "[fe80::1%eth0]")
	f.Fuzz(func(t *testing.T, args, qps, size, interval, level, nodeIP string) {
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\x00")
		}
		envs := map[string]string{
			"NODE_NAME": "n1", "POD_NAMESPACE": "obs",
			"FLEETAGENT_FLEET_QPS": qps, "FLEETAGENT_FLEET_SIZE": size,
			"FLEETAGENT_COLLECTION_INTERVAL": interval, "FLEETAGENT_LOG_LEVEL": level,
			"NODE_IP": nodeIP,
		}
		cfg, _, err := ParseFlags(argv, env(envs), io.Discard)
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if _, _, ferr := ParseFlags(argv, env(nil), io.Discard); ferr != nil && !strings.HasPrefix(ferr.Error(), "unexpected arguments") {
			// A command line the flag package refuses is reported (with
			// any environment errors beside it), naming the flag and its
			// value.
			if err == nil || strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("flag error %v lost", ferr)
			}
			return
		}
		// A bad value in the environment is named, with the variable.
		if qps != "" {
			if _, perr := strconv.ParseFloat(qps, 64); perr != nil {
				mustName(t, err, "FLEETAGENT_FLEET_QPS", fmt.Sprintf("%q", qps))
			}
		}
		if size != "" {
			if _, perr := strconv.Atoi(size); perr != nil {
				mustName(t, err, "FLEETAGENT_FLEET_SIZE", fmt.Sprintf("%q", size))
			}
		}
		if interval != "" {
			if _, perr := time.ParseDuration(interval); perr != nil {
				mustName(t, err, "FLEETAGENT_COLLECTION_INTERVAL", fmt.Sprintf("%q", interval))
			}
		}
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := cfg.Validate(); err == nil {
			checkValid(t, cfg)
		}
	})
}

// FuzzConfig fuzzes Validate directly, field by field: every problem is
// reported naming the bad value, and an accepted Config is within the
// documented ranges.
func FuzzConfig(f *testing.F) {
	def := DefaultConfig()
	f.Add("n1", def.FleetQPS, 0, "obs/fleetagent", "https://10.0.0.5:10250", def.AdminAddress, int64(def.CollectionInterval), int64(def.SyncTimeout), int64(def.ShutdownTimeout), def.InformerMode, def.LogLevel)
	f.Add("", 0.0, -1, "", "", "", int64(0), int64(0), int64(0), "", "")
	f.Add("n1", 10000.5, 5, "a/b/c", "http://", "host", int64(time.Hour+1), int64(-1), int64(1), "watch-list", "INFO")
	f.Add("n1", 1e-300, 0, "/x", "https://[::1]:10250/", "[::1]:65536", int64(time.Second), int64(1), int64(1), "List-Watch", "debug-4")
	f.Fuzz(func(t *testing.T, node string, qps float64, size int, ds, endpoint, adminAddr string, interval, syncTimeout, shutdown int64, mode, level string) {
		c := DefaultConfig()
		c.NodeName, c.FleetQPS, c.FleetSize, c.DaemonSet = node, qps, size, ds
		c.KubeletEndpoint, c.AdminAddress = endpoint, adminAddr
		c.CollectionInterval, c.SyncTimeout, c.ShutdownTimeout = time.Duration(interval), time.Duration(syncTimeout), time.Duration(shutdown)
		c.InformerMode, c.LogLevel = mode, level
		err := c.Validate()
		if err == nil {
			checkValid(t, c)
			return
		}
		if !(qps > 0 && qps <= 10000) {
			mustName(t, err, "fleet-qps", fmt.Sprint(qps))
		}
		if size < 0 {
			mustName(t, err, "fleet-size", strconv.Itoa(size))
		}
		if c.CollectionInterval < time.Second || c.CollectionInterval > time.Hour {
			mustName(t, err, "collection interval", c.CollectionInterval.String())
		}
		if mode != "list-watch" && mode != "watch-list" {
			mustName(t, err, "informer mode", fmt.Sprintf("%q", mode))
		}
		if _, lerr := ParseLevel(level); lerr != nil {
			mustName(t, err, "log level", fmt.Sprintf("%q", level))
		}
		if endpoint != "" {
			if u, perr := url.Parse(endpoint); perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				mustName(t, err, "kubelet endpoint", fmt.Sprintf("%q", endpoint))
			}
		}
	})
}

func mustName(t *testing.T, err error, what, value string) {
	t.Helper()
	if err == nil {
		t.Fatalf("bad %s %s accepted", what, value)
	}
	if msg := err.Error(); !strings.Contains(msg, what) || !strings.Contains(msg, value) {
		t.Fatalf("error does not name %s %s: %v", what, value, err)
	}
}

// checkValid states, independently of Validate's code, what an accepted
// configuration must satisfy for the agent to run.
func checkValid(t *testing.T, c Config) {
	t.Helper()
	if c.NodeName == "" {
		t.Fatal("accepted an empty node name")
	}
	if !(c.FleetQPS > 0 && c.FleetQPS <= 10000) {
		t.Fatalf("accepted fleet-qps %v", c.FleetQPS)
	}
	if c.FleetSize < 0 {
		t.Fatalf("accepted fleet-size %d", c.FleetSize)
	}
	if c.CollectionInterval < time.Second || c.CollectionInterval > time.Hour {
		t.Fatalf("accepted collection interval %v", c.CollectionInterval)
	}
	if c.SyncTimeout <= 0 || c.ShutdownTimeout <= 0 {
		t.Fatalf("accepted sync timeout %v, shutdown timeout %v", c.SyncTimeout, c.ShutdownTimeout)
	}
	if c.InformerMode != "list-watch" && c.InformerMode != "watch-list" {
		t.Fatalf("accepted informer mode %q", c.InformerMode)
	}
	if c.KubeSource != KubeSourceInformer && c.KubeSource != KubeSourceKubelet {
		t.Fatalf("accepted kube source %q", c.KubeSource)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		t.Fatalf("accepted log level %q", c.LogLevel)
	}
	u, err := url.Parse(c.KubeletEndpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		t.Fatalf("accepted kubelet endpoint %q", c.KubeletEndpoint)
	}
	if _, err := collector.NewKubeletClient(collector.KubeletConfig{Endpoint: c.KubeletEndpoint}); err != nil {
		t.Fatalf("accepted kubelet endpoint %q that the kubelet client refuses: %v", c.KubeletEndpoint, err)
	}
}
