# fleetagent — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/fleetagent/fleetagent/agent.Version=$(VERSION) -X github.com/fleetagent/fleetagent/agent.Commit=$(COMMIT)
# Integration tests find the control plane here.
export FLEETAGENT_BIN_DIR := $(BIN)

.PHONY: all controlplane build test vet fmtcheck run bench image sbom costmodel clean

all: build

## controlplane: build the pinned etcd and kube-apiserver into bin/ (no-op when current)
controlplane: $(BIN)/etcd $(BIN)/kube-apiserver

$(BIN)/etcd: tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 $(GO) build -trimpath -o $@ go.etcd.io/etcd/server/v3

$(BIN)/kube-apiserver: tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 $(GO) build -trimpath -o $@ k8s.io/kubernetes/cmd/kube-apiserver

## build: the static agent binary, built as the Dockerfile builds it
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetagent ./cmd/fleetagent

fmtcheck:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Nested modules with their own go.mod (kept out of the agent's dependency graph).
SUBMODULES := deploy charts tools/sbom
# Modules with no tests of their own, only vetted (which builds them) so they cannot rot:
# bench/k8sattr holds the otel-k8sattributes strategy that only `make bench` runs.
VETMODULES := bench/k8sattr

vet:
	$(GO) vet ./...
	for m in $(SUBMODULES) $(VETMODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

## test: build what the tests need, then gofmt, vet, and every test with the race detector
test: controlplane build fmtcheck vet
	$(GO) test -race -count=1 -timeout 45m ./...
	for m in $(SUBMODULES); do (cd $$m && $(GO) test -race -count=1 -timeout 20m ./...) || exit 1; done

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

## image: the container image (needs a container engine; `make build` builds the same binary)
IMAGE ?= fleetagent:$(VERSION)
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image: no docker CLI found; install docker or podman-docker. The same static binary is built by 'make build'."; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: docker CLI found but no container engine is reachable (docker info failed); start one or set DOCKER_HOST. 'make build' builds the same binary."; exit 1; }
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

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
