package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetagent/fleetagent/preflight/costmodel"
)

var updateCostModel = flag.Bool("update-costmodel", false, "rewrite "+costmodel.File+" from bench/results.jsonl")

// TestCostModelIsCurrent: the cost model `fleetagent preflight` embeds is
// exactly what the committed benchmark results give, so no figure in it
// is typed by hand or left behind by a new `make bench`.
// `go test ./bench/cmd/report -run TestCostModelIsCurrent -update-costmodel`
// rewrites it.
func TestCostModelIsCurrent(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	want, err := costModel(filepath.Join(root, "bench", "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, costmodel.File)
	if *updateCostModel {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what bench/results.jsonl gives; run this test with -update-costmodel (make bench does it)\ngot:\n%s\nwant:\n%s", costmodel.File, got, want)
	}
}
