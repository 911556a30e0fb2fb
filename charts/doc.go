// Package charts holds fleetagent's Helm chart (charts/fleetagent) and the
// tests that render it with Helm's own Go SDK, lint it, apply it
// server-side to a real kube-apiserver, and compare it object by object
// with the kustomize rendering of deploy/, so the two cannot drift.
//
// It is a separate Go module so that Helm's dependencies stay out of the
// agent's module; `make test` runs it with `cd charts && go test ./...`.
package charts
