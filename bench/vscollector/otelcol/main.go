// Command otelcol-vscollector is the OpenTelemetry Collector that the
// footprint benchmark runs beside fleetagent: the Collector's own
// command (otelcol.NewCommand) built with only the components a node agent
// needs for the same job, as the opentelemetry-collector Helm chart's
// kubeletMetrics and kubernetesAttributes presets wire them: the
// kubeletstats receiver, the k8sattributes and batch processors and the
// OTLP (gRPC) exporter. The versions are those of bench/vscollector/go.mod.
//
//	otelcol-vscollector --config=file:/path/to/config.yaml
package main

import (
	"fmt"
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/k8sattributesprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/kubeletstatsreceiver"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

// Version is the contrib release the components come from.
const Version = "v0.149.0"

func components() (otelcol.Factories, error) {
	var f otelcol.Factories
	var err1, err2, err3 error
	f.Receivers, err1 = otelcol.MakeFactoryMap[receiver.Factory](kubeletstatsreceiver.NewFactory())
	f.Processors, err2 = otelcol.MakeFactoryMap[processor.Factory](k8sattributesprocessor.NewFactory(), batchprocessor.NewFactory())
	f.Exporters, err3 = otelcol.MakeFactoryMap[exporter.Factory](otlpexporter.NewFactory())
	// The Collector's own telemetry (logs, and metrics served for pull),
	// as the contrib distribution configures it.
	f.Telemetry = otelconftelemetry.NewFactory()
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			return f, err
		}
	}
	return f, nil
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otelcol-vscollector", Description: "OpenTelemetry Collector for fleetagent's footprint benchmark", Version: Version},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{ResolverSettings: confmap.ResolverSettings{
			ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory(), envprovider.NewFactory()},
			DefaultScheme:     "env",
		}},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "otelcol-vscollector:", err)
		os.Exit(1)
	}
}
