# syntax=docker/dockerfile:1
# Multi-stage, static build of the fleetagent binary. The binary is built the
# same way by `make build` (and so by `make test`), so what CI tests is what
# the image ships.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/fleetagent/fleetagent/agent.Version=${VERSION}" \
      -o /out/fleetagent ./cmd/fleetagent

# distroless/static: no shell, no package manager, runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fleetagent /fleetagent
USER 65532:65532
ENTRYPOINT ["/fleetagent"]
