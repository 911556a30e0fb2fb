# fleetagent — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/fleetagent/fleetagent/agent.Version=$(VERSION) -X github.com/fleetagent/fleetagent/agent.Commit=$(COMMIT)
# Integration tests find the control plane here.
export FLEETAGENT_BIN_DIR := $(BIN)

.PHONY: all controlplane node build test vet fmtcheck run bench image e2e sbom costmodel clean

all: build

## controlplane: build the pinned etcd and kube-apiserver into bin/ (no-op when current)
controlplane: $(BIN)/etcd $(BIN)/kube-apiserver

$(BIN)/etcd: tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 $(GO) build -trimpath -o $@ go.etcd.io/etcd/server/v3

$(BIN)/kube-apiserver: tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 $(GO) build -trimpath -o $@ k8s.io/kubernetes/cmd/kube-apiserver

## node: the rest of a real node for `make e2e` (no-op when current): kubelet,
## kube-controller-manager and kube-scheduler from the same pinned tools module as
## kube-apiserver; containerd (+ its runc shim and ctr), runc and the CNI loopback plugin
## from the pinned tools/runtime module. Cold on 2 busy cores: kubelet ~8 min,
## controller-manager ~3 min, scheduler and the runtime ~1-2 min each.
NODE_BINS    := $(BIN)/kubelet $(BIN)/kube-controller-manager $(BIN)/kube-scheduler
RUNTIME_BINS := $(BIN)/containerd $(BIN)/containerd-shim-runc-v2 $(BIN)/ctr $(BIN)/runc $(BIN)/cni/loopback
node: controlplane $(NODE_BINS) $(RUNTIME_BINS) $(BIN)/imagebuild

$(NODE_BINS): tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 $(GO) build -trimpath -o $@ k8s.io/kubernetes/cmd/$(notdir $@)

$(BIN)/containerd: tools/runtime/go.mod tools/runtime/go.sum
	cd tools/runtime && CGO_ENABLED=1 $(GO) build -trimpath -tags no_btrfs,no_devmapper,no_zfs -o $@ github.com/containerd/containerd/v2/cmd/containerd

$(BIN)/containerd-shim-runc-v2 $(BIN)/ctr: tools/runtime/go.mod tools/runtime/go.sum
	cd tools/runtime && CGO_ENABLED=0 $(GO) build -trimpath -o $@ github.com/containerd/containerd/v2/cmd/$(notdir $@)

# runc needs cgo and libseccomp's headers for seccomp (the agent's pod asks for
# the RuntimeDefault profile): Debian's libseccomp-dev, installed when missing.
$(BIN)/runc: tools/runtime/go.mod tools/runtime/go.sum
	@pkg-config --exists libseccomp 2>/dev/null || { echo "runc: installing libseccomp-dev and pkg-config (Debian) for seccomp support"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libseccomp-dev pkg-config; }
	cd tools/runtime && CGO_ENABLED=1 $(GO) build -trimpath -tags seccomp -o $@ github.com/opencontainers/runc

$(BIN)/cni/loopback: tools/runtime/go.mod tools/runtime/go.sum
	cd tools/runtime && CGO_ENABLED=0 $(GO) build -trimpath -o $@ github.com/containernetworking/plugins/plugins/main/loopback

$(BIN)/imagebuild: tools/image/go.mod tools/image/go.sum $(wildcard tools/image/*.go)
	cd tools/image && CGO_ENABLED=0 $(GO) build -trimpath -o $@ .

## build: the static agent binary, built as the Dockerfile builds it
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetagent ./cmd/fleetagent

fmtcheck:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Nested modules with their own go.mod (kept out of the agent's dependency graph).
# compat/otelcol: compatibility with the OpenTelemetry Collector's kubeletstats receiver
# and k8sattributes processor, run as libraries (the Collector's graph stays out of go.mod).
SUBMODULES := deploy charts tools/sbom tools/image compat/otelcol
# Modules with no tests of their own, only vetted (which builds them) so they cannot rot:
# bench/k8sattr holds the otel-k8sattributes strategy that only `make bench` runs.
VETMODULES := bench/k8sattr

vet:
	$(GO) vet ./...
	for m in $(SUBMODULES) $(VETMODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

## test: build what the tests need, then gofmt, vet, every test with the race detector, and the
## end-to-end test on a real node (make e2e; needs root)
test: controlplane build fmtcheck vet
	$(GO) test -race -count=1 -timeout 45m ./...
	for m in $(SUBMODULES); do (cd $$m && $(GO) test -race -count=1 -timeout 20m ./...) || exit 1; done
	$(MAKE) e2e E2E_ARCHS=$$($(GO) env GOARCH)

## run: the main job (see README)
## run: the main job: local control plane, a simulated 100-node cluster with churn, one agent, OTLP out.
## Larger or longer: make run RUN_FLAGS="-nodes 500 -duration 5m"
run: controlplane
	$(GO) run ./cmd/fleetagent-sandbox $(RUN_FLAGS)


## bench: apiserver cost per node for every strategy (~14 min on 2 cores); writes bench/RESULTS.md,
## bench/results.svg and preflight/costmodel/costmodel.json. 1000 nodes: make bench BENCHFLAGS=-bench.nodes=1000
BENCHFLAGS ?=
bench: controlplane
	rm -f bench/results.jsonl
	cd bench/k8sattr && $(GO) test . -run '^$$' -bench APIServerLoad -benchtime=1x -timeout 60m -bench.json=$(CURDIR)/bench/results.jsonl $(BENCHFLAGS) > $(CURDIR)/bench/bench.log 2>&1 || { tail -n 40 $(CURDIR)/bench/bench.log; exit 1; }
	@grep -E '^(Benchmark|ok|FAIL)' bench/bench.log
	$(GO) run ./bench/cmd/report -in bench/results.jsonl -log bench/bench.log -md bench/RESULTS.md -svg bench/results.svg
	$(MAKE) costmodel

## image: the agent's image for linux/amd64 and linux/arm64 as an OCI image layout tarball,
## dist/fleetagent-image.tar, with no container engine and no registry (tools/image):
## the static binary, a CA bundle, non-root user 65532, OCI labels. Load it with
## `ctr -n k8s.io images import`, `skopeo copy oci-archive:...` or `docker load` (engines that
## read OCI archives). With an engine, `docker buildx build --platform linux/amd64,linux/arm64 .`
## builds the same from the Dockerfile.
IMAGE     ?= fleetagent.local/fleetagent:$(VERSION)
IMAGE_TAR ?= dist/fleetagent-image.tar
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
IMAGE_ARCHS ?= amd64 arm64
image: $(BIN)/imagebuild
	@set -e; for a in $(IMAGE_ARCHS); do mkdir -p dist/linux-$$a; \
	  echo "building dist/linux-$$a/fleetagent"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/linux-$$a/fleetagent ./cmd/fleetagent; done
	$(BIN)/imagebuild -name $(IMAGE) -out $(IMAGE_TAR) -ca-bundle $(CA_BUNDLE) -user 65532:65532 \
	  -label org.opencontainers.image.title=fleetagent -label org.opencontainers.image.licenses=Apache-2.0 \
	  -label org.opencontainers.image.version=$(VERSION) -label org.opencontainers.image.revision=$(COMMIT) \
	  $(foreach a,$(IMAGE_ARCHS),-binary linux/$(a)=dist/linux-$(a)/fleetagent)

## e2e: the agent as a DaemonSet pod on a real node on loopback (root; see README, "Run it on a
## real node"): builds the node's parts and the image, then runs deploy/e2e.
E2E_IMAGE := fleetagent.local/fleetagent:e2e
# The node runs one architecture; `make test` builds only that one (E2E_ARCHS=host).
E2E_ARCHS ?= amd64 arm64
e2e: node
	$(MAKE) image IMAGE=$(E2E_IMAGE) IMAGE_TAR=dist/fleetagent-e2e-image.tar IMAGE_ARCHS="$(E2E_ARCHS)"
	cd deploy && FLEETAGENT_E2E_IMAGE_TAR=$(CURDIR)/dist/fleetagent-e2e-image.tar $(GO) test -tags e2e -count=1 -timeout 30m -v ./e2e/

## costmodel: rewrite preflight/costmodel/costmodel.json (what `fleetagent preflight` scales to a
## cluster) from bench/results.jsonl; run after make bench. make test fails while they disagree.
costmodel:
	$(GO) test ./bench/cmd/report -run TestCostModelIsCurrent -count=1 -args -update-costmodel

## sbom: a CycloneDX SBOM of the agent binary (SBOM_OS/SBOM_ARCH, default linux/amd64) from the Go
## module graph of the committed HEAD, by the generator pinned in tools/sbom, checked against the
## modules the built binary really links. Writes dist/fleetagent-$(SBOM_OS)-$(SBOM_ARCH).cdx.json
SBOM_OS   ?= linux
SBOM_ARCH ?= amd64
SBOM      := dist/fleetagent-$(SBOM_OS)-$(SBOM_ARCH).cdx.json
$(BIN)/cyclonedx-gomod: tools/sbom/go.mod tools/sbom/go.sum
	cd tools/sbom && CGO_ENABLED=0 $(GO) build -trimpath -o $@ github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod

sbom: $(BIN)/cyclonedx-gomod
	@mkdir -p dist
	@# From a clone of HEAD: the generator reads the version from git, and a
	@# worktree's .git file is not a repository to it.
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	git clone -q --no-local . $$tmp/src; git -C $$tmp/src checkout -q $$(git rev-parse HEAD); \
	cd $$tmp/src; \
	CGO_ENABLED=0 GOOS=$(SBOM_OS) GOARCH=$(SBOM_ARCH) $(BIN)/cyclonedx-gomod app -json -licenses -main cmd/fleetagent -output $(CURDIR)/$(SBOM) .; \
	CGO_ENABLED=0 GOOS=$(SBOM_OS) GOARCH=$(SBOM_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$tmp/fleetagent ./cmd/fleetagent; \
	cd $(CURDIR)/tools/sbom && $(GO) run ./cmd/sbomcheck -sbom $(CURDIR)/$(SBOM) -bin $$tmp/fleetagent

clean:
	rm -rf $(BIN)
