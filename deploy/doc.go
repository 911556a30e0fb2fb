// Package deploy holds fleetagent's Kubernetes manifests (a kustomize base,
// components and overlays) and the tests that render them with kustomize's
// own library and apply them with server-side apply to a real kube-apiserver.
//
// It is a separate Go module so that kustomize's dependencies stay out of the
// agent's module; `make test` runs it with `cd deploy && go test ./...`.
package deploy
