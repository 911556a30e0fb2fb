package main

import "github.com/fleetagent/fleetagent/preflight/costmodel"

// costModel derives the per-node cost model `fleetagent preflight` embeds
// from the fleetagent rows of a -bench.json file.
func costModel(in string) ([]byte, error) {
	results, err := read(in)
	if err != nil {
		return nil, err
	}
	// One model needs one pod density: the most common among the
	// fleetagent rows (the default run's); a run made for another purpose
	// (the 5000-agent start at 1 pod per node) is left out.
	var fleet []result
	for _, r := range results {
		if r.Strategy == "fleetagent" {
			fleet = append(fleet, r)
		}
	}
	var rows []costmodel.Measurement
	for _, r := range mainDensity(fleet) {
		rows = append(rows, costmodel.Measurement{Nodes: r.Nodes, Agents: r.Agents, PodsPerNode: r.PodsPerNode, Metrics: r.Metrics})
	}
	m, err := costmodel.Derive("bench/results.jsonl (make bench), fleetagent rows", rows)
	if err != nil {
		return nil, err
	}
	return m.Marshal()
}
