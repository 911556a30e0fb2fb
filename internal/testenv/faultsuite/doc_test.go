// Package faultsuite is fleetagent's reliability fault suite. It has no
// production code: its tests run real agents (in-process through
// agent.New, and the built cmd/fleetagent binary as a subprocess) against
// the real etcd and kube-apiserver of internal/testenv/controlplane, a recorded
// kubelet (internal/testenv/fakekubelet) and a real OTLP receiver
// (internal/testenv/otlpreceiver), and break each of them:
//
//   - apiserver killed and restarted, short and long outages, with a fleet
//     of 30 agents: recovery is jittered and the fleet's request rate, read
//     from the audit log per agent user, stays within FleetQPS plus
//     FleetSize×Burst in every window (TestFleetSurvivesAPIServerRestart);
//   - etcd compacted while an agent is cut off, so its resumed watch gets
//     410 Gone: it relists from its last resourceVersion and watches on
//     (TestWatchGoneAfterCompaction);
//   - sustained 429s from API Priority and Fairness, and a slow apiserver
//     behind a latency-injecting proxy the test owns (TestAPFRejection,
//     TestSlowAPIServer);
//   - the OTLP collector down, slow and answering errors for many export
//     intervals (TestCollectorDownSlowFailing);
//   - the kubelet down, slow, and answering errors, malformed, truncated and
//     oversized bodies (TestKubeletFaults);
//   - SIGTERM at every logged phase of start-up and during an export, to
//     the real binary (TestSIGTERM).
//
// Every case checks that the agent does not crash, that it resumes on its
// own, that its live heap (after GC) stays bounded, and that no goroutine
// outlives it (goleak, per test and for the whole package in TestMain).
// Invalid flags and environment are covered by cmd/fleetagent's tests, and
// the parsers by the fuzz tests in agent and collector.
//
// It is a test-only package: the proxy, the heap and audit-rate measurements
// and the rigs live in its _test.go files.
package faultsuite
