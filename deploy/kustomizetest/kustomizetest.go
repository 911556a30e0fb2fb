// Package kustomizetest renders kustomizations in tests as `kubectl
// kustomize` does (kubectl embeds the same krusty library), and writes the
// kind of overlay a user keeps over deploy/. The deploy and charts tests
// share it.
package kustomizetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Render builds the kustomization directory dir and returns its objects.
func Render(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		// Through JSON, so numbers are int64/float64 as unstructured expects.
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, r.CurId(), err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(b); err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, r.CurId(), err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// Overlay is a user's own kustomization over a deploy/ directory.
type Overlay struct {
	Resource   string            // the deploy/ directory it uses, e.g. "overlays/fleet"
	Components []string          // deploy/ components it adds
	Extra      string            // more of its kustomization.yaml, after the components
	Files      map[string][]byte // files beside its kustomization.yaml, by name
}

// Write writes the overlay in a new temporary directory, referring to
// deploy/ (at deployDir) by a relative path as a user's overlay does, and
// returns that directory.
func (o Overlay) Write(t testing.TB, deployDir string) string {
	t.Helper()
	dir := t.TempDir()
	deploy, err := filepath.Abs(deployDir)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, deploy)
	if err != nil {
		t.Fatal(err)
	}
	rel = filepath.ToSlash(rel)
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s/%s\ncomponents:\n", rel, o.Resource)
	for _, c := range o.Components {
		fmt.Fprintf(&b, "- %s/%s\n", rel, c)
	}
	b.WriteString(o.Extra)
	for name, content := range o.Files {
		WriteFile(t, filepath.Join(dir, name), content)
	}
	WriteFile(t, filepath.Join(dir, "kustomization.yaml"), []byte(b.String()))
	return dir
}

// WriteFile writes b to p, failing the test if it cannot.
func WriteFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
