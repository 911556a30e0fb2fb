//go:build tools

// Package sbom pins the CycloneDX SBOM generator that `make sbom` runs
// (go run from this module, so its version and checksums are the ones in
// go.mod and go.sum here), outside the agent's own dependency graph.
package sbom

import _ "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod"
