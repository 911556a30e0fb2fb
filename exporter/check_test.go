package exporter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/testpki"
)

// TestCheckEnv: each OTEL_* value the exporters would ignore or refuse is
// reported, naming the variable and what to do, all at once; good values
// pass.
func TestCheckEnv(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("collector-ca")
	if err != nil {
		t.Fatal(err)
	}
	goodCA := filepath.Join(dir, "ca.crt")
	notPEM := filepath.Join(dir, "not.pem")
	for p, b := range map[string][]byte{goodCA: testpki.PEM(ca.Cert), notPEM: []byte("not a certificate")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	check := func(env map[string]string) error {
		return CheckEnv(Config{Getenv: func(k string) string { return env[k] }})
	}

	good := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gateway:4317", "OTEL_EXPORTER_OTLP_CERTIFICATE": goodCA,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "10000",
	}
	if err := check(good); err != nil {
		t.Errorf("good settings rejected: %v", err)
	}
	err = check(map[string]string{
		"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL":           "thrift",
		"OTEL_EXPORTER_OTLP_PROTOCOL":                   "grpc",
		"OTEL_EXPORTER_OTLP_ENDPOINT":                   "http://gateway:43 17",
		"OTEL_EXPORTER_OTLP_CERTIFICATE":                missing,
		"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE":        notPEM,
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE":         goodCA,
		"OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY":         missing,
		"OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": goodCA,
		"OTEL_EXPORTER_OTLP_TIMEOUT":                    "10s",
	})
	want := []string{
		`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="thrift" is not supported`,
		`OTEL_EXPORTER_OTLP_ENDPOINT="http://gateway:43 17" is not a URL`,
		`OTEL_EXPORTER_OTLP_CERTIFICATE="` + missing + `" cannot be read (no such file or directory)`,
		`OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE="` + notPEM + `" holds no PEM certificate`,
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY must be set together",
		`OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE="` + goodCA + `" and OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY="` + missing + `" do not load`,
		`OTEL_EXPORTER_OTLP_TIMEOUT="10s" is not a whole number of milliseconds`,
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("CheckEnv error does not say %q:\n%v", w, err)
		}
	}
	if err != nil && strings.Count(err.Error(), "\n")+1 != len(want) {
		t.Errorf("want one line per problem (%d):\n%v", len(want), err)
	}

	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name")
	if err := check(nil); err == nil || !strings.Contains(err.Error(), "OTEL_RESOURCE_ATTRIBUTES") {
		t.Errorf("resource attributes without a value: %v", err)
	}
}

// TestExporterIgnoresUnreadableCertificate is why CheckEnv exists: the
// OTLP exporter is built without complaint when its CA certificate cannot
// be read, and would then verify the collector against the system roots.
func TestExporterIgnoresUnreadableCertificate(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", missing)
	p, err := New(context.Background(), Config{Retry: Retry{Disabled: true}})
	if err != nil {
		t.Fatalf("New refused the setting itself (then CheckEnv would not be needed for it): %v", err)
	}
	// Nothing listens: skip the final export.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Shutdown(ctx)
	if err := CheckEnv(Config{}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("CheckEnv: %v, want the unreadable certificate named", err)
	}
}
