# syntax=docker/dockerfile:1
# Multi-stage, static build of the fleetagent binary, for any platform:
#   docker buildx build --platform linux/amd64,linux/arm64 -t fleetagent .
# The build stage runs on the builder's own platform and cross-compiles
# (CGO off), so no emulation is needed. The binary is built the same way by
# `make build` (and so by `make test`), and `make image` packs the same
# binaries into an OCI archive without any container engine.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/fleetagent/fleetagent/agent.Version=${VERSION} -X github.com/fleetagent/fleetagent/agent.Commit=${COMMIT}" \
      -o /out/fleetagent ./cmd/fleetagent

# distroless/static: CA bundle, no shell, no package manager, runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="fleetagent" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/fleetagent /fleetagent
USER 65532:65532
ENTRYPOINT ["/fleetagent"]
