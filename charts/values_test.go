package charts_test

import (
	"strings"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/apply"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// agentSpec renders the chart with values and returns the agent's pod
// spec, its container's environment by name and its volumes by name.
func agentSpec(t *testing.T, values string) (corev1.PodSpec, map[string]corev1.EnvVar, map[string]corev1.Volume, []*unstructured.Unstructured) {
	t.Helper()
	objs := mustRender(t, "fleetagent", values)
	ps := apply.Find[appsv1.DaemonSet](t, objs, "DaemonSet", "fleetagent").Spec.Template.Spec
	env := map[string]corev1.EnvVar{}
	for _, e := range ps.Containers[0].Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s is set twice", e.Name)
		}
		env[e.Name] = e
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	// Every mount has its volume.
	for _, m := range ps.Containers[0].VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			t.Errorf("volume mount %s has no volume", m.Name)
		}
	}
	return ps, env, vols, objs
}

// mountedAt returns the volume mounted at dir.
func mountedAt(t *testing.T, ps corev1.PodSpec, vols map[string]corev1.Volume, dir string) corev1.Volume {
	t.Helper()
	for _, m := range ps.Containers[0].VolumeMounts {
		if m.MountPath == dir {
			if !m.ReadOnly {
				t.Errorf("mount %s is writable", dir)
			}
			return vols[m.Name]
		}
	}
	t.Fatalf("nothing mounted at %s: %s", dir, mustJSON(ps.Containers[0].VolumeMounts))
	return corev1.Volume{}
}

// TestChartValues: each value reaches the object and field it documents.
func TestChartValues(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	t.Run("image", func(t *testing.T) {
		ps, _, _, _ := agentSpec(t, "image: {repository: registry.example/fa, tag: v1.2.3, digest: \""+digest+"\", pullPolicy: Always}")
		if c := ps.Containers[0]; c.Image != "registry.example/fa:v1.2.3@"+digest || c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("image %q pull %q, want registry.example/fa:v1.2.3@%s, Always", c.Image, c.ImagePullPolicy, digest)
		}
		ps, _, _, _ = agentSpec(t, "")
		if got := ps.Containers[0].Image; got != "ghcr.io/fleetagent/fleetagent:"+loadChart(t).Metadata.AppVersion {
			t.Errorf("default image %q, want the chart's appVersion as the tag", got)
		}
	})
	t.Run("fleet budget and hint", func(t *testing.T) {
		_, env, _, objs := agentSpec(t, "fleet: {qps: 12.5, sizeHint: 1234}")
		if got := env["FLEETAGENT_FLEET_QPS"].Value; got != "12.5" {
			t.Errorf("FLEETAGENT_FLEET_QPS = %q, want 12.5", got)
		}
		cm := apply.Find[corev1.ConfigMap](t, objs, "ConfigMap", "fleetagent-control")
		if cm.Data["fleet-size-hint"] != "1234" {
			t.Errorf("control ConfigMap = %v, want fleet-size-hint 1234", cm.Data)
		}
		_, _, _, objs = agentSpec(t, "")
		if cm := apply.Find[corev1.ConfigMap](t, objs, "ConfigMap", "fleetagent-control"); len(cm.Data) != 1 || cm.Data["kill-switch"] != "off" {
			t.Errorf("default control ConfigMap = %v, want only kill-switch off (no hint key)", cm.Data)
		}
	})
	t.Run("kill switch", func(t *testing.T) {
		_, _, _, objs := agentSpec(t, "killSwitch: {state: \"on\"}")
		if cm := apply.Find[corev1.ConfigMap](t, objs, "ConfigMap", "fleetagent-control"); cm.Data["kill-switch"] != "on" {
			t.Errorf("control ConfigMap = %v, want kill-switch on", cm.Data)
		}
	})
	t.Run("otlp headers and TLS", func(t *testing.T) {
		ps, env, vols, _ := agentSpec(t, `otlp: {endpoint: "https://otlp.example:4317", protocol: http/protobuf, headersSecret: {name: otlp-auth, key: h}, tls: {caConfigMap: {name: otlp-ca, key: bundle.pem}, clientCertSecret: otlp-client}}`)
		if got := env["OTEL_EXPORTER_OTLP_ENDPOINT"].Value; got != "https://otlp.example:4317" {
			t.Errorf("endpoint %q", got)
		}
		if got := env["OTEL_EXPORTER_OTLP_PROTOCOL"].Value; got != "http/protobuf" {
			t.Errorf("protocol %q", got)
		}
		if h := env["OTEL_EXPORTER_OTLP_HEADERS"]; h.Value != "" || h.ValueFrom == nil || h.ValueFrom.SecretKeyRef == nil || h.ValueFrom.SecretKeyRef.Name != "otlp-auth" || h.ValueFrom.SecretKeyRef.Key != "h" {
			t.Errorf("OTEL_EXPORTER_OTLP_HEADERS = %s, want from Secret otlp-auth key h", mustJSON(h))
		}
		ca := env["OTEL_EXPORTER_OTLP_CERTIFICATE"].Value
		if v := mountedAt(t, ps, vols, "/etc/fleetagent/otlp-ca"); v.ConfigMap == nil || v.ConfigMap.Name != "otlp-ca" || ca != "/etc/fleetagent/otlp-ca/bundle.pem" {
			t.Errorf("OTEL_EXPORTER_OTLP_CERTIFICATE %q in volume %s, want key bundle.pem of ConfigMap otlp-ca", ca, mustJSON(v))
		}
		v := mountedAt(t, ps, vols, "/etc/fleetagent/otlp-client")
		if v.Secret == nil || v.Secret.SecretName != "otlp-client" || env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"].Value != "/etc/fleetagent/otlp-client/tls.crt" || env["OTEL_EXPORTER_OTLP_CLIENT_KEY"].Value != "/etc/fleetagent/otlp-client/tls.key" {
			t.Errorf("client certificate volume %s, env %s %s", mustJSON(v), env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"].Value, env["OTEL_EXPORTER_OTLP_CLIENT_KEY"].Value)
		}
		_, env, _, _ = agentSpec(t, `otlp: {headers: "api-key=x", tls: {insecure: true}}`)
		if env["OTEL_EXPORTER_OTLP_HEADERS"].Value != "api-key=x" || env["OTEL_EXPORTER_OTLP_INSECURE"].Value != "true" {
			t.Errorf("headers %q insecure %q, want api-key=x and true", env["OTEL_EXPORTER_OTLP_HEADERS"].Value, env["OTEL_EXPORTER_OTLP_INSECURE"].Value)
		}
	})
	t.Run("kubelet TLS", func(t *testing.T) {
		_, env, _, _ := agentSpec(t, "")
		for _, k := range []string{"FLEETAGENT_KUBELET_CA_FILE", "FLEETAGENT_KUBELET_TLS_SERVER_NAME", "FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY"} {
			if _, ok := env[k]; ok {
				t.Errorf("clusterCA mode sets %s; the agent's default (the service-account CA) is the cluster CA", k)
			}
		}
		ps, env, vols, _ := agentSpec(t, "kubeletTLS: {mode: caConfigMap, caConfigMap: my-kubelets}")
		if v := mountedAt(t, ps, vols, "/etc/fleetagent/kubelet-ca"); v.ConfigMap == nil || v.ConfigMap.Name != "my-kubelets" || env["FLEETAGENT_KUBELET_CA_FILE"].Value != "/etc/fleetagent/kubelet-ca/ca.crt" {
			t.Errorf("caConfigMap mode: volume %s, CA file %q", mustJSON(v), env["FLEETAGENT_KUBELET_CA_FILE"].Value)
		}
		if sn := env["FLEETAGENT_KUBELET_TLS_SERVER_NAME"]; sn.ValueFrom == nil || sn.ValueFrom.FieldRef == nil || sn.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
			t.Errorf("caConfigMap mode: server name %s, want the node name", mustJSON(sn))
		}
		_, env, _, _ = agentSpec(t, "kubeletTLS: {mode: insecureSkipVerify}")
		if env["FLEETAGENT_KUBELET_INSECURE_SKIP_VERIFY"].Value != "true" {
			t.Errorf("insecureSkipVerify mode: env %s", mustJSON(env))
		}
		if _, ok := env["FLEETAGENT_KUBELET_CA_FILE"]; ok {
			t.Errorf("insecureSkipVerify with a CA file: the agent refuses both at once")
		}
	})
	t.Run("GOMEMLIMIT", func(t *testing.T) {
		for values, want := range map[string]string{
			"":                                     "115MiB",
			"resources: {limits: {memory: 256Mi}}": "230MiB",
			"resources: {limits: {memory: 1Gi}}":   "921MiB",
			"goMemLimit: 100MiB":                   "100MiB",
		} {
			if _, env, _, _ := agentSpec(t, values); env["GOMEMLIMIT"].Value != want {
				t.Errorf("values %q: GOMEMLIMIT = %q, want %q", values, env["GOMEMLIMIT"].Value, want)
			}
		}
	})
	t.Run("scheduling and pod metadata", func(t *testing.T) {
		objs := mustRender(t, "fleetagent", `priorityClassName: system-node-critical
podLabels: {team: obs}
podAnnotations: {a.example/b: c}
nodeSelector: {kubernetes.io/os: linux, pool: general}
tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
extraEnv: [{name: FLEETAGENT_LOG_LEVEL, value: debug}]`)
		ds := apply.Find[appsv1.DaemonSet](t, objs, "DaemonSet", "fleetagent")
		pt := ds.Spec.Template
		if pt.Spec.PriorityClassName != "system-node-critical" || pt.Labels["team"] != "obs" || pt.Labels["app.kubernetes.io/name"] != "fleetagent" ||
			pt.Annotations["a.example/b"] != "c" || pt.Spec.NodeSelector["pool"] != "general" ||
			len(pt.Spec.Tolerations) != 1 || pt.Spec.Tolerations[0].Key != "dedicated" {
			t.Errorf("pod template = %s", mustJSON(pt))
		}
		if ds.Spec.Selector.MatchLabels["team"] != "" {
			t.Errorf("pod labels leaked into the selector, which is immutable: %v", ds.Spec.Selector.MatchLabels)
		}
		if c := pt.Spec.Containers[0]; c.Env[len(c.Env)-1].Name != "FLEETAGENT_LOG_LEVEL" {
			t.Errorf("extraEnv not appended: %s", mustJSON(c.Env))
		}
		ps, _, _, _ := agentSpec(t, "tolerateAllTaints: true")
		if mustJSON(ps.Tolerations) != `[{"operator":"Exists"}]` {
			t.Errorf("tolerateAllTaints: tolerations %s", mustJSON(ps.Tolerations))
		}
	})
	t.Run("monitoring", func(t *testing.T) {
		objs := mustRender(t, "obs", "monitoring: {serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}, prometheusRule: {enabled: true, labels: {release: prom}}}")
		svc := apply.Find[corev1.Service](t, objs, "Service", "fleetagent-metrics")
		if svc.Spec.ClusterIP != "None" || svc.Spec.Selector["app.kubernetes.io/name"] != "fleetagent" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 9808 {
			t.Errorf("metrics Service = %s, want headless over the agents' admin port 9808", mustJSON(svc.Spec))
		}
		for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
			var o *unstructured.Unstructured
			for _, x := range objs {
				if x.GetKind() == kind {
					o = x
				}
			}
			if o == nil || o.GetLabels()["release"] != "prom" || o.GetNamespace() != "obs" {
				t.Errorf("%s = %v, want one in obs labelled release=prom", kind, o)
			}
		}
		if apply.Has(objs, "PodMonitor", "fleetagent") || apply.Has(objs, "ConfigMap", "fleetagent-dashboard") {
			t.Errorf("PodMonitor or dashboard rendered though not enabled")
		}
	})
	t.Run("no gateway", func(t *testing.T) {
		objs := mustRender(t, "fleetagent", "gateway: {enabled: false}\notlp: {endpoint: \"http://collector.example:4317\"}")
		for _, o := range objs {
			if strings.Contains(o.GetName(), "gateway") {
				t.Errorf("gateway disabled, but %s %s is rendered", o.GetKind(), o.GetName())
			}
		}
	})
}

// TestChartRejectsBadValues: a value the chart cannot use fails the
// install with a message naming the value and what to do.
func TestChartRejectsBadValues(t *testing.T) {
	for values, want := range map[string]string{
		"gateway: {enabled: false}":           "set otlp.endpoint",
		"resources: {limits: {memory: 500M}}": "set goMemLimit",
		"image: {digest: latest}":             "digest",
		"kubeletTLS: {mode: skip}":            "mode",
		"killSwitch: {source: file}":          "source",
		"fleet: {sizeHint: -1}":               "sizeHint",
		"fleetQps: 50":                        "fleetQps",
		"updateStrategy: {type: Recreate}":    "type",
		"otlp: {protocol: http}":              "protocol",
	} {
		_, err := renderChart(t, "fleetagent", values)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("values %q: error %v, want one containing %q", values, err, want)
		}
	}
}
