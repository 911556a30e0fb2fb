package main

import (
	"debug/buildinfo"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck runs the check against a small binary built here, whose build
// information lists the module it links: an SBOM with all of them passes,
// one missing a module or at another version fails, naming it.
func TestCheck(t *testing.T) {
	self := filepath.Join(t.TempDir(), "linked")
	if b, err := exec.Command("go", "build", "-o", self, "./testdata/linked").CombinedOutput(); err != nil {
		t.Fatalf("build testdata/linked: %v\n%s", err, b)
	}
	info, err := buildinfo.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Deps) == 0 {
		t.Fatal("testdata/linked links no module: nothing to check against")
	}
	type comp struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	write := func(comps []comp) string {
		b, err := json.Marshal(map[string]any{"bomFormat": "CycloneDX", "components": comps})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "bom.json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var all []comp
	for _, d := range info.Deps {
		all = append(all, comp{d.Path, d.Version})
	}
	if n, err := check(write(all), self); err != nil || n != len(all) {
		t.Errorf("complete SBOM: %d modules, %v; want %d and no error", n, err, len(all))
	}
	first := info.Deps[0]
	if _, err := check(write(all[1:]), self); err == nil || !strings.Contains(err.Error(), first.Path+" "+first.Version+" is linked") {
		t.Errorf("SBOM without %s: %v, want an error naming it", first.Path, err)
	}
	wrong := append([]comp{{first.Path, "v0.0.0-wrong"}}, all[1:]...)
	if _, err := check(write(wrong), self); err == nil || !strings.Contains(err.Error(), "v0.0.0-wrong in the SBOM") {
		t.Errorf("SBOM with a wrong version of %s: %v, want an error naming it", first.Path, err)
	}
}
