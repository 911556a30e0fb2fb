package controlplane

import (
	"context"
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
)

// Metrics scrapes the apiserver's /metrics as the admin and parses it into
// metric families keyed by name.
func (cp *ControlPlane) Metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	client, err := rest.HTTPClientFor(cp.AdminConfig())
	if err != nil {
		return nil, err
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape apiserver /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape apiserver /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse apiserver /metrics: %w", err)
	}
	return fams, nil
}

// Sum adds up the values of every sample of the family name whose labels
// include all of match: counters and gauges by value, histograms and
// summaries by their sample sum. A family that is absent sums to 0, as
// the apiserver omits counters that never moved.
func Sum(fams map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	var total float64
	eachSample(fams, name, match, func(m *dto.Metric) {
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Untyped != nil:
			total += m.GetUntyped().GetValue()
		case m.Histogram != nil:
			total += m.GetHistogram().GetSampleSum()
		case m.Summary != nil:
			total += m.GetSummary().GetSampleSum()
		}
	})
	return total
}

// Count adds up the sample counts of a histogram or summary family.
func Count(fams map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	var total float64
	eachSample(fams, name, match, func(m *dto.Metric) {
		switch {
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		case m.Summary != nil:
			total += float64(m.GetSummary().GetSampleCount())
		}
	})
	return total
}

// eachSample calls f for every sample of the family name whose labels
// include all of match; an absent family has none.
func eachSample(fams map[string]*dto.MetricFamily, name string, match map[string]string, f func(*dto.Metric)) {
	for _, m := range fams[name].GetMetric() {
		if labelsMatch(m, match) {
			f(m)
		}
	}
}

func labelsMatch(m *dto.Metric, match map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := match[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(match)
}
