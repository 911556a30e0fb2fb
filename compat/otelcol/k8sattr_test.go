package otelcol_test

import (
	"context"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/k8sattributesprocessor"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/processor/processortest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// labelTag prefixes the pod labels the processor is told to copy (every
// label of the pod, by key_regex).
const labelTag = "compat.label."

// TestK8sattributesRecognisesEveryPod passes the agent's real export
// through the Collector's k8sattributes processor (contrib, as a library)
// with pod_association on the resource attribute k8s.pod.uid only, backed
// by the real apiserver. Every pod and container resource of the export
// must get the attributes the processor takes from its pod (its
// k8s.pod.start_time and its labels, none of which the agent sends), pod
// by pod, with as many pods recognised as the node has. A resource whose
// k8s.pod.uid is no pod's stays as it was, so the recognition is the uid's.
func TestK8sattributesRecognisesEveryPod(t *testing.T) {
	c := capture(t)
	byUID := map[string]corev1.Pod{}
	for _, p := range c.pods {
		byUID[string(p.UID)] = p
	}

	// The processor's kubeConfig auth type finds the apiserver through
	// KUBECONFIG, as kubectl would.
	kc := clientcmdapi.NewConfig()
	admin := cp.AdminConfig()
	kc.Clusters["compat"] = &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthorityData: admin.CAData}
	kc.AuthInfos["compat"] = &clientcmdapi.AuthInfo{Token: admin.BearerToken}
	kc.Contexts["compat"] = &clientcmdapi.Context{Cluster: "compat", AuthInfo: "compat"}
	kc.CurrentContext = "compat"
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kcPath); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kcPath)

	f := k8sattributesprocessor.NewFactory()
	cfg := f.CreateDefaultConfig().(*k8sattributesprocessor.Config)
	cfg.APIConfig.AuthType = "kubeConfig"
	cfg.Filter.Node = c.node
	cfg.Passthrough = false
	cfg.Association = []k8sattributesprocessor.PodAssociationConfig{
		{Sources: []k8sattributesprocessor.PodAssociationSourceConfig{{From: "resource_attribute", Name: "k8s.pod.uid"}}},
	}
	cfg.Extract.Metadata = []string{"k8s.pod.start_time"}
	cfg.Extract.Labels = []k8sattributesprocessor.FieldExtractConfig{{TagName: labelTag + "$1", KeyRegex: "(.*)", From: "pod"}}
	cfg.WaitForMetadata = true
	cfg.WaitForMetadataTimeout = 30 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatalf("k8sattributes config: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sink := new(consumertest.MetricsSink)
	proc, err := f.CreateMetrics(ctx, processortest.NewNopSettings(f.Type()), cfg, sink)
	if err != nil {
		t.Fatalf("create k8sattributes processor: %v", err)
	}
	if err := proc.Start(ctx, componenttest.NewNopHost()); err != nil {
		t.Fatalf("start k8sattributes processor: %v", err)
	}
	defer func() {
		if err := proc.Shutdown(context.Background()); err != nil {
			t.Errorf("shut the k8sattributes processor down: %v", err)
		}
	}()

	in := pmetric.NewMetrics()
	c.fleetagent.CopyTo(in)
	// A copy of one pod resource under a uid no pod has: the control.
	stranger := string(uuid.NewUUID())
	for _, rm := range in.ResourceMetrics().All() {
		if _, ok := rm.Resource().Attributes().Get("k8s.pod.uid"); ok {
			dup := in.ResourceMetrics().AppendEmpty()
			rm.CopyTo(dup)
			dup.Resource().Attributes().PutStr("k8s.pod.uid", stranger)
			break
		}
	}
	podResources := 0
	for _, rm := range in.ResourceMetrics().All() {
		if _, ok := rm.Resource().Attributes().Get("k8s.pod.uid"); ok {
			podResources++
		}
		for k := range rm.Resource().Attributes().All() {
			if k == "k8s.pod.start_time" || strings.HasPrefix(k, labelTag) {
				t.Fatalf("the agent's export already carries %s; the test could not tell the processor's work", k)
			}
		}
	}
	if err := proc.ConsumeMetrics(ctx, in); err != nil {
		t.Fatalf("k8sattributes processor: %v", err)
	}
	if len(sink.AllMetrics()) != 1 {
		t.Fatalf("the processor passed on %d batches for 1", len(sink.AllMetrics()))
	}
	out := sink.AllMetrics()[0]

	recognised := map[string]int{}
	seen := 0
	for _, rm := range out.ResourceMetrics().All() {
		attrs := rm.Resource().Attributes()
		uid, ok := attrs.Get("k8s.pod.uid")
		if !ok {
			continue
		}
		seen++
		start, hasStart := attrs.Get("k8s.pod.start_time")
		labels := map[string]string{}
		for k, v := range attrs.All() {
			if l, ok := strings.CutPrefix(k, labelTag); ok {
				labels[l] = v.Str()
			}
		}
		if uid.Str() == stranger {
			if hasStart || len(labels) > 0 {
				t.Errorf("a resource whose k8s.pod.uid is no pod's got k8s.pod.start_time=%q and labels %v", start.Str(), labels)
			}
			continue
		}
		p, known := byUID[uid.Str()]
		if !known {
			t.Errorf("the agent exported k8s.pod.uid %s, which is no pod of %s", uid.Str(), c.node)
			continue
		}
		want, err := p.CreationTimestamp.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		name, _ := attrs.Get("k8s.pod.name")
		switch {
		case len(p.Labels) == 0:
			t.Fatalf("pod %s/%s has no labels; the test needs them to tell its pod", p.Namespace, p.Name)
		case !hasStart || len(labels) == 0:
			t.Errorf("pod %s/%s (resource %s): not recognised: k8s.pod.start_time set %v, %d labels", p.Namespace, p.Name, name.Str(), hasStart, len(labels))
		case start.Str() != string(want) || !maps.Equal(labels, p.Labels):
			t.Errorf("pod %s/%s: recognised as another pod: k8s.pod.start_time %q (want %q), labels %v (want %v)", p.Namespace, p.Name, start.Str(), want, labels, p.Labels)
		default:
			recognised[uid.Str()]++
		}
	}
	if seen != podResources {
		t.Errorf("%d pod and container resources went in, %d came out", podResources, seen)
	}
	for _, p := range c.pods {
		if recognised[string(p.UID)] == 0 {
			t.Errorf("pod %s/%s (uid %s): none of its resources was recognised", p.Namespace, p.Name, p.UID)
		}
	}
	if len(recognised) != len(c.pods) {
		t.Errorf("%d pods recognised, the node has %d", len(recognised), len(c.pods))
	}
	t.Logf("%d pods, %d pod and container resources, all recognised by k8s.pod.uid: %v", len(c.pods), podResources-1, !t.Failed())
}
