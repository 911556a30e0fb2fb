// Package otelcol holds fleetagent's compatibility tests against the
// OpenTelemetry Collector, run as a library: the contrib kubeletstats
// receiver reads the same stand-in kubelet as the agent and every metric
// both emit must match in name, unit, instrument and resource attribute
// keys, or be listed as a deliberate deviation in collector/README.md
// (TestKubeletstatsReceiverCompatibility); and the agent's export passed
// through the contrib k8sattributes processor, associating on
// k8s.pod.uid, is recognised pod by pod (TestK8sattributesRecognisesEveryPod).
//
// It is a module of its own so that the Collector's dependency graph stays
// out of the agent's go.mod; the package has no code besides its tests.
package otelcol
