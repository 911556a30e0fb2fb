package main

import "github.com/fleetagent/fleetagent/preflight/costmodel"

// costModel derives the per-node cost model `fleetagent preflight` embeds
// from the fleetagent rows of a -bench.json file.
func costModel(in string) ([]byte, error) {
	results, err := read(in)
	if err != nil {
		return nil, err
	}
	var rows []costmodel.Measurement
	for _, r := range results {
		if r.Strategy == "fleetagent" {
			rows = append(rows, costmodel.Measurement{Nodes: r.Nodes, Agents: r.Agents, PodsPerNode: r.PodsPerNode, Metrics: r.Metrics})
		}
	}
	m, err := costmodel.Derive("bench/results.jsonl (make bench), fleetagent rows", rows)
	if err != nil {
		return nil, err
	}
	return m.Marshal()
}
