//go:build tools

// Package runtime records the container runtime binaries the real-node
// end-to-end test (make e2e) runs: containerd with its runc shim and ctr,
// runc, and the CNI loopback plugin. It is its own module because
// containerd's dependency graph does not agree with k8s.io/kubernetes'.
package runtime

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/opencontainers/runc"
)
