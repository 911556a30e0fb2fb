package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNum(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {0.1234, "0.123"}, {42, "42"}, {512, "512"}, {12345, "12.3k"}, {3.2e6, "3.2M"}, {-2500000, "-2.5M"}, {7.1e9, "7.1G"},
	} {
		if got := num(tc.in); got != tc.want {
			t.Errorf("num(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// reportOf reads the results of fixture, writes their report, and checks
// that it contains every one of wants.
func reportOf(t *testing.T, fixture string, wants ...string) ([]result, string) {
	t.Helper()
	rs, err := read(fixture)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeMarkdown(&b, rs, "../../..", "", "results.svg", "")
	md := b.String()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	return rs, md
}

// TestReport checks the headline ratios and that every result has a row,
// on a small fixture.
func TestReport(t *testing.T) {
	rs, _ := reportOf(t, "testdata/two.jsonl",
		"## Headline: growth of per-node cost from 10 to 100 nodes (10x the cluster)",
		"| watchlist | 100 | 10.0x | 1.1x | 1.0x | 1.0x | 0 → 0 |",
		"| fleetagent | 100 | 0 → 0 | 1.1x | 1.1x | 0.9x | 0 → 0 |",
		"| watchlist | 100 | 20 |",
		"kube-apiserver v1.37.2 and etcd",
	)
	svg := chart(rs)
	if strings.Count(svg, "<polyline") != 3*2 {
		t.Errorf("chart: want one line per strategy in each of 3 panels, got %d", strings.Count(svg, "<polyline"))
	}
}

// TestReportStrategyMissingAtLargest checks that when one strategy was not
// run at the largest size, the headline still spans the smallest to the
// largest size, the missing strategy keeps a row whose growth stops at its
// own largest size (and is named as not measured there), the chart's axis
// reaches the largest size, and the requests section shows each strategy at
// its own largest size.
func TestReportStrategyMissingAtLargest(t *testing.T) {
	rs, md := reportOf(t, "testdata/partial.jsonl",
		"## Headline: growth of per-node cost from 10 to 1000 nodes (100x the cluster)",
		"Not measured at 1000 nodes: watchlist;",
		"| watchlist | 100 | 10.0x | 1.1x | 1.0x | 1.0x | 0 → 0 |",
		"| fleetagent | 1000 | 0 → 0 | 1.1x | 3.0x | 2.0x | 0 → 2 |",
		"- **watchlist** (100 nodes):",
		"- **fleetagent** (1000 nodes): start-up none; steady window `list pods node rv=0` ×7.",
	)
	// Only fleetagent was measured at 1000: the table relative to it has
	// no row, and watchlist's requests are not shown at a smaller size.
	if !strings.Contains(md, "relative to fleetagent:\n\n| strategy | start-up bytes | steady bytes | steady watch events |\n|---|---:|---:|---:|\n\n") {
		t.Errorf("table relative to fleetagent at 1000 nodes should be empty:\n%s", md)
	}
	if strings.Contains(md, "- **watchlist** (10 nodes)") {
		t.Errorf("report shows watchlist's requests at a size other than its largest:\n%s", md)
	}
	svg := chart(withAgents(rs))
	if !strings.Contains(svg, `text-anchor="middle">1000</text>`) {
		t.Errorf("chart's axis does not reach 1000 nodes:\n%s", svg)
	}
	if n := strings.Count(svg, "<polyline"); n != 3*2 {
		t.Errorf("chart: want one line per strategy in each of 3 panels, got %d", n)
	}
}

// TestAppendSection checks that -include's file ends the report as it is,
// and that a missing one is an error naming the flag.
func TestAppendSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "footprint.md")
	section := "## Node footprint\n\n| a | b |\n"
	if err := os.WriteFile(path, []byte(section), 0o644); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("# Report\n")
	if err := appendSection(&b, path); err != nil {
		t.Fatal(err)
	}
	if want := "# Report\n\n" + section; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	if err := appendSection(&b, filepath.Join(t.TempDir(), "missing.md")); err == nil || !strings.Contains(err.Error(), "-include") {
		t.Errorf("missing file: got %v, want an error naming -include", err)
	}
}
