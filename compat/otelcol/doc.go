// Package otelcol holds fleetagent's compatibility tests against the
// OpenTelemetry Collector, run as a library: the contrib kubeletstats
// receiver reads the same stand-in kubelet as the agent and every metric
// both emit must match in name, unit, instrument, resource attribute keys
// and point attribute keys, or be listed as a deliberate deviation in
// collector/README.md (TestKubeletstatsReceiverCompatibility); and the agent's export passed
// through the contrib k8sattributes processor, associating on
// k8s.pod.uid, is recognised pod by pod (TestK8sattributesRecognisesEveryPod).
//
// It is a module of its own so that the Collector's dependency graph stays
// out of the agent's go.mod; the package has no code besides its tests.
// Versions: kubeletstatsreceiver v0.149.0 (later ones need an
// internal/kubelet module version the module proxy does not serve) and
// k8sattributesprocessor v0.160.0 (v0.149.0 does not build against the
// agent's client-go, whose informers gained HasSyncedChecker); the
// Collector core modules are the ones v0.160.0 requires.
package otelcol
