# fleetagent — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/fleetagent/fleetagent/agent.Version=$(VERSION)
# Integration tests find the control plane here.
export FLEETAGENT_BIN_DIR := $(BIN)

.PHONY: all controlplane build test vet fmtcheck run bench image clean

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
SUBMODULES := deploy charts

vet:
	$(GO) vet ./...
	for m in $(SUBMODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

## test: build what the tests need, then gofmt, vet, and every test with the race detector
test: controlplane build fmtcheck vet
	$(GO) test -race -count=1 -timeout 45m ./...
	for m in $(SUBMODULES); do (cd $$m && $(GO) test -race -count=1 -timeout 20m ./...) || exit 1; done

## run: the main job (see README)
## run: the main job: local control plane, a simulated 100-node cluster with churn, one agent, OTLP out.
## Larger or longer: make run RUN_FLAGS="-nodes 500 -duration 5m"
run: controlplane
	$(GO) run ./cmd/fleetagent-sandbox $(RUN_FLAGS)


## bench: apiserver cost per node for every strategy (~14 min on 2 cores); writes bench/RESULTS.md and
## bench/results.svg. 1000 nodes: make bench BENCHFLAGS=-bench.nodes=1000
BENCHFLAGS ?=
bench: controlplane
	rm -f bench/results.jsonl
	cd bench/k8sattr && $(GO) test . -run '^$$' -bench APIServerLoad -benchtime=1x -timeout 60m -bench.json=$(CURDIR)/bench/results.jsonl $(BENCHFLAGS) > $(CURDIR)/bench/bench.log 2>&1 || { tail -n 40 $(CURDIR)/bench/bench.log; exit 1; }
	@grep -E '^(Benchmark|ok|FAIL)' bench/bench.log
	$(GO) run ./bench/cmd/report -in bench/results.jsonl -log bench/bench.log -md bench/RESULTS.md -svg bench/results.svg

## image: the container image (needs a container engine; `make build` builds the same binary)
IMAGE ?= fleetagent:$(VERSION)
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image: no docker CLI found; install docker or podman-docker. The same static binary is built by 'make build'."; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: docker CLI found but no container engine is reachable (docker info failed); start one or set DOCKER_HOST. 'make build' builds the same binary."; exit 1; }
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

clean:
	rm -rf $(BIN)
