package exporter

import (
	"context"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestCompressionDefaultsToGzip: with no OTEL_EXPORTER_OTLP_*COMPRESSION
// variable the export arrives gzip-compressed, over gRPC and HTTP; "none"
// still turns it off, and the metrics-specific variable counts too.
func TestCompressionDefaultsToGzip(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		for _, tc := range []struct {
			name, env, value, want string
		}{
			{"unset", "", "", "gzip"},
			{"none", "OTEL_EXPORTER_OTLP_COMPRESSION", "none", "identity"},
			{"metrics none", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none", "identity"},
			{"gzip", "OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", "gzip"},
		} {
			t.Run(protocol+"/"+tc.name, func(t *testing.T) {
				recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
				addr := recv.GRPCAddr()
				if protocol == ProtocolHTTPProtobuf {
					addr = recv.HTTPAddr()
				}
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
				t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "")
				t.Setenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "")
				if tc.env != "" {
					t.Setenv(tc.env, tc.value)
				}
				prov, err := New(context.Background(), Config{Protocol: protocol, NodeName: "node-1", Interval: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = prov.Shutdown(context.Background()) }()
				c, err := prov.Meter("test").Int64Counter("test.counter")
				if err != nil {
					t.Fatal(err)
				}
				c.Add(context.Background(), 1)
				if err := prov.ForceFlush(context.Background()); err != nil {
					t.Fatal(err)
				}
				exports := recv.Exports()
				if len(exports) == 0 {
					t.Fatal("nothing exported")
				}
				for _, e := range exports {
					if e.Encoding != tc.want {
						t.Errorf("%s export arrived with encoding %q, want %q", e.Protocol, e.Encoding, tc.want)
					}
				}
			})
		}
	}
}
