// Package apply server-side applies manifests to a test control plane as
// `kubectl apply --server-side --force-conflicts` does, with strict field
// validation, so that a misspelt or misplaced field is an error, and
// records the apiserver's Warning headers (Pod Security, deprecations).
package apply

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Applier applies objects with one field manager.
type Applier struct {
	dyn          dynamic.Interface
	mapper       meta.RESTMapper
	fieldManager string

	mu       sync.Mutex
	warnings []string
}

// New returns an Applier for the apiserver cfg points at.
func New(t testing.TB, cfg *rest.Config, fieldManager string) *Applier {
	t.Helper()
	a := &Applier{fieldManager: fieldManager}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = -1
	cfg.WarningHandlerWithContext = a
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.dyn, err = dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return a
}

// HandleWarningHeaderWithContext records one Warning header.
func (a *Applier) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.warnings = append(a.warnings, text)
}

// Warnings returns the warnings recorded since the last call, and forgets
// them.
func (a *Applier) Warnings() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.warnings
	a.warnings = nil
	return w
}

// Apply applies objs, namespaces first, and returns them as the apiserver
// stored them. Every namespaced object must name its namespace.
func (a *Applier) Apply(ctx context.Context, t testing.TB, objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	t.Helper()
	objs = slices.Clone(objs)
	notNS := func(o *unstructured.Unstructured) int {
		if o.GetKind() == "Namespace" {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(objs, func(x, y *unstructured.Unstructured) int { return notNS(x) - notNS(y) })
	force := true
	var out []*unstructured.Unstructured
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("map %s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				t.Fatalf("%s %s has no namespace: every namespaced object must name its namespace", gvk.Kind, obj.GetName())
			}
			ri = a.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		}
		body, err := json.Marshal(obj.Object)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
			FieldManager: a.fieldManager, Force: &force, FieldValidation: metav1.FieldValidationStrict,
		})
		if err != nil {
			t.Fatalf("server-side apply %s %s/%s: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		out = append(out, got)
	}
	return out
}

// Find returns the object of kind and name among objs, converted to T.
func Find[T any](t testing.TB, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			v := new(T)
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, v); err != nil {
				t.Fatalf("convert %s %s: %v", kind, name, err)
			}
			return v
		}
	}
	t.Fatalf("no %s %q among the objects", kind, name)
	return nil
}

// Has reports whether objs hold an object of kind and name.
func Has(objs []*unstructured.Unstructured, kind, name string) bool {
	return slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind && o.GetName() == name })
}
