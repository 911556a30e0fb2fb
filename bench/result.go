package bench

import "github.com/fleetagent/fleetagent/bench/result"

// Result is what one strategy cost at one size (bench/result).
type Result = result.Result

// Info is what a reader needs to judge the numbers (bench/result).
type Info = result.Info
