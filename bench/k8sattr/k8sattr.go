// Package k8sattr adds the otel-k8sattributes strategy to the benchmark:
// the OpenTelemetry Collector's k8sattributes processor, configured as the
// opentelemetry-collector Helm chart's kubernetesAttributes preset does for
// a DaemonSet, one processor instance per node. It lives in its own module
// so that the collector's dependency graph stays out of the product's
// go.mod.
package k8sattr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/k8sattributesprocessor"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processortest"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fleetagent/fleetagent/bench"
)

// ChartMetadata is the chart preset's extract.metadata list
// (charts/opentelemetry-collector/templates/_config.tpl,
// "opentelemetry-collector.kubernetesAttributesConfig").
var ChartMetadata = []string{
	"k8s.namespace.name", "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name",
	"k8s.cronjob.name", "k8s.job.name", "k8s.node.name", "k8s.pod.name", "k8s.pod.uid", "k8s.pod.start_time",
}

// Strategy is otel-k8sattributes. Each agent is one processor instance
// with the chart's settings: node filter, passthrough off, the chart's
// pod_association and metadata list, everything else at the processor's
// defaults (streaming lists included). Two things differ because all
// instances share this process: the node filter is given as filter.node
// rather than node_from_env_var (the chart's K8S_NODE_NAME would be one
// value for all), and credentials come from a kubeconfig context per node
// (auth_type kubeConfig) instead of the pod's service account.
// wait_for_metadata is set so that sync can be observed; it changes when
// Start returns, not what is requested.
func Strategy() bench.Strategy {
	kc := &kubeconfigs{}
	return bench.Strategy{Name: "otel-k8sattributes", ClusterScoped: true, New: func(cfg *rest.Config, node string, _ bench.Env) (bench.Agent, error) {
		if err := kc.add(node, cfg); err != nil {
			return nil, err
		}
		f := k8sattributesprocessor.NewFactory()
		c := f.CreateDefaultConfig().(*k8sattributesprocessor.Config)
		// The config type lives in the collector's internal k8sconfig
		// package; its fields are set one by one.
		c.APIConfig.AuthType = "kubeConfig"
		c.APIConfig.Context = node
		c.Filter.Node = node
		c.Passthrough = false
		c.Association = []k8sattributesprocessor.PodAssociationConfig{
			{Sources: []k8sattributesprocessor.PodAssociationSourceConfig{{From: "resource_attribute", Name: "k8s.pod.ip"}}},
			{Sources: []k8sattributesprocessor.PodAssociationSourceConfig{{From: "resource_attribute", Name: "k8s.pod.uid"}}},
			{Sources: []k8sattributesprocessor.PodAssociationSourceConfig{{From: "connection"}}},
		}
		c.Extract.Metadata = append([]string(nil), ChartMetadata...)
		c.WaitForMetadata = true
		c.WaitForMetadataTimeout = 10 * time.Minute
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("k8sattributes config for %s: %w", node, err)
		}
		return &agent{factory: f, cfg: c, node: node, synced: make(chan struct{})}, nil
	}}
}

// kubeconfigs keeps one kubeconfig with a context per node and points
// KUBECONFIG at it, which is how the processor's kubeConfig auth type
// finds credentials.
type kubeconfigs struct {
	mu   sync.Mutex
	path string
	cfg  *clientcmdapi.Config
}

func (k *kubeconfigs) add(node string, rc *rest.Config) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cfg == nil {
		dir, err := os.MkdirTemp("", "bench-k8sattr-")
		if err != nil {
			return err
		}
		k.path = filepath.Join(dir, "kubeconfig")
		k.cfg = clientcmdapi.NewConfig()
		if err := os.Setenv("KUBECONFIG", k.path); err != nil {
			return err
		}
	}
	k.cfg.Clusters[node] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	k.cfg.AuthInfos[node] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	k.cfg.Contexts[node] = &clientcmdapi.Context{Cluster: node, AuthInfo: node}
	k.cfg.CurrentContext = node
	if err := clientcmd.WriteToFile(*k.cfg, k.path); err != nil {
		return fmt.Errorf("write kubeconfig for %s: %w", node, err)
	}
	return nil
}

type agent struct {
	factory processor.Factory
	cfg     *k8sattributesprocessor.Config
	node    string

	mu      sync.Mutex
	proc    processor.Metrics
	started bool
	synced  chan struct{}
	err     error
	done    chan struct{}
}

// Start creates and starts the processor in the background: with
// wait_for_metadata its Start blocks until the informers sync.
func (a *agent) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return errors.New("otel-k8sattributes agent already started")
	}
	a.started = true
	set := processortest.NewNopSettings(a.factory.Type())
	p, err := a.factory.CreateMetrics(ctx, set, a.cfg, consumertest.NewNop())
	if err != nil {
		return fmt.Errorf("create k8sattributes processor for %s: %w", a.node, err)
	}
	a.proc = p
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		err := p.Start(ctx, componenttest.NewNopHost())
		a.mu.Lock()
		a.err = err
		a.mu.Unlock()
		close(a.synced)
	}()
	return nil
}

func (a *agent) WaitForSync(ctx context.Context) error {
	select {
	case <-a.synced:
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.err != nil {
			return fmt.Errorf("k8sattributes processor for %s: %w", a.node, a.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("k8sattributes processor for %s not synced: %w", a.node, ctx.Err())
	}
}

func (a *agent) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	p, done := a.proc, a.done
	a.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.Shutdown(ctx)
}
