package charts_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/apply"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test.
const chartDir = "fleetagent"

var (
	loadOnce sync.Once
	loaded   *chart.Chart
	loadErr  error
)

func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	loadOnce.Do(func() { loaded, loadErr = loader.LoadDir(chartDir) })
	if loadErr != nil {
		t.Fatalf("load chart %s: %v", chartDir, loadErr)
	}
	return loaded
}

// renderChart renders the chart as `helm template fleetagent charts/fleetagent
// -n namespace -f values` does: Helm's values coalescing and schema
// validation, its template engine, then the manifests split into objects.
// NOTES.txt and empty documents are dropped.
func renderChart(t testing.TB, namespace string, values string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	c := loadChart(t)
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(values), &vals); err != nil {
		t.Fatalf("test values do not parse: %v", err)
	}
	top, err := util.ToRenderValues(c, vals, common.ReleaseOptions{Name: "fleetagent", Namespace: namespace, IsInstall: true, Revision: 1}, common.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(c, top)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var objs []*unstructured.Unstructured
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(files[name]), 4096)
		for {
			var m map[string]any
			if err := d.Decode(&m); err != nil {
				if err.Error() == "EOF" {
					break
				}
				return nil, fmt.Errorf("%s: %w\n%s", name, err, files[name])
			}
			if len(m) == 0 {
				continue
			}
			// Through JSON, so numbers are int64/float64 as unstructured expects.
			b, err := json.Marshal(m)
			if err != nil {
				return nil, err
			}
			o := &unstructured.Unstructured{}
			if err := o.UnmarshalJSON(b); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// mustRender is renderChart for values that must render.
func mustRender(t testing.TB, namespace, values string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := renderChart(t, namespace, values)
	if err != nil {
		t.Fatalf("render chart with values %q: %v", values, err)
	}
	return objs
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// newApplier applies as `kubectl apply --server-side --force-conflicts`
// does, with strict field validation.
func newApplier(t testing.TB, cfg *rest.Config) *apply.Applier {
	return apply.New(t, cfg, "fleetagent-chart-test")
}
