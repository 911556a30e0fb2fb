package exporter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// CheckEnv reports every problem with cfg and the OTEL_* variables New
// reads that would otherwise surface late or never, without building an
// exporter: a protocol New refuses, and the values the OTLP exporters
// (v1.47) only log and then ignore, carrying on without them: an endpoint
// that is not a URL, an unreadable or non-PEM CA certificate, a client
// certificate and key that do not load, a timeout that is not whole
// milliseconds, and OTEL_RESOURCE_ATTRIBUTES that do not parse. The agent
// calls it before its first apiserver request.
func CheckEnv(cfg Config) error {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	// The exporters trim and treat "" as unset.
	env := func(k string) (string, bool) {
		v := strings.TrimSpace(getenv(k))
		return v, v != ""
	}
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if cfg.Protocol == "" {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
			if v := getenv(k); v != "" {
				if v != ProtocolGRPC && v != ProtocolHTTPProtobuf {
					errs = append(errs, fmt.Errorf("%s=%q is not supported: use grpc or http/protobuf", k, v))
				}
				break // the first one set is the one New uses
			}
		}
	}
	for _, p := range []string{"OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_METRICS_"} {
		if v, ok := env(p + "ENDPOINT"); ok {
			if _, err := url.Parse(v); err != nil {
				errs = append(errs, fmt.Errorf("%sENDPOINT=%q is not a URL (%v): use e.g. http://otel-gateway:4317", p, v, errors.Unwrap(err)))
			}
		}
		if v, ok := env(p + "CERTIFICATE"); ok {
			b, err := os.ReadFile(v)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%sCERTIFICATE=%q cannot be read (%v): mount the collector's CA certificate there", p, v, errors.Unwrap(err)))
			case !x509.NewCertPool().AppendCertsFromPEM(b):
				errs = append(errs, fmt.Errorf("%sCERTIFICATE=%q holds no PEM certificate: it must hold the CA certificate that signs the collector's", p, v))
			}
		}
		crt, okc := env(p + "CLIENT_CERTIFICATE")
		key, okk := env(p + "CLIENT_KEY")
		switch {
		case okc != okk:
			errs = append(errs, fmt.Errorf("%sCLIENT_CERTIFICATE and %sCLIENT_KEY must be set together: the exporter ignores one without the other", p, p))
		case okc:
			if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
				errs = append(errs, fmt.Errorf("%sCLIENT_CERTIFICATE=%q and %sCLIENT_KEY=%q do not load as a key pair: %v", p, crt, p, key, err))
			}
		}
		if v, ok := env(p + "TIMEOUT"); ok {
			if _, err := strconv.Atoi(v); err != nil {
				errs = append(errs, fmt.Errorf("%sTIMEOUT=%q is not a whole number of milliseconds: use e.g. 10000", p, v))
			}
		}
	}
	if _, err := newResource(context.Background(), cfg); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
