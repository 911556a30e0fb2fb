// Command sbomcheck checks a CycloneDX SBOM against the binary it
// describes: every module the Go toolchain linked into the binary (its
// embedded build information) must be a component of the SBOM at the same
// version. `make sbom` runs it on what it has just written.
//
//	sbomcheck -sbom dist/fleetagent.cdx.json -bin bin/fleetagent
package main

import (
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
)

func main() {
	sbom := flag.String("sbom", "", "CycloneDX JSON SBOM")
	bin := flag.String("bin", "", "the Go binary it describes")
	flag.Parse()
	if *sbom == "" || *bin == "" {
		fmt.Fprintln(os.Stderr, "sbomcheck: -sbom and -bin are required")
		os.Exit(2)
	}
	n, err := check(*sbom, *bin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sbomcheck: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("sbomcheck: %s lists all %d modules linked into %s\n", *sbom, n, *bin)
}

// bom is the part of a CycloneDX document the check reads.
type bom struct {
	BOMFormat  string `json:"bomFormat"`
	Components []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"components"`
}

// check returns how many modules of bin it found in the SBOM, or an error
// naming every module that is missing or at another version.
func check(sbomPath, binPath string) (int, error) {
	b, err := os.ReadFile(sbomPath)
	if err != nil {
		return 0, err
	}
	var doc bom
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, fmt.Errorf("%s: %w", sbomPath, err)
	}
	if doc.BOMFormat != "CycloneDX" {
		return 0, fmt.Errorf("%s: bomFormat %q, want CycloneDX", sbomPath, doc.BOMFormat)
	}
	have := map[string]string{}
	for _, c := range doc.Components {
		have[c.Name] = c.Version
	}
	info, err := buildinfo.ReadFile(binPath)
	if err != nil {
		return 0, fmt.Errorf("read the build information of %s: %w", binPath, err)
	}
	var errs []error
	for _, d := range info.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		switch v, ok := have[d.Path]; {
		case !ok:
			errs = append(errs, fmt.Errorf("%s %s is linked into %s but not in the SBOM", d.Path, d.Version, binPath))
		case v != d.Version:
			errs = append(errs, fmt.Errorf("%s is %s in %s but %s in the SBOM", d.Path, d.Version, binPath, v))
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return len(info.Deps), errors.Join(errs...)
}
