// Command burn is the real node's test workload: it holds a known amount of
// memory (touched, so it is in the working set) and keeps a known share of
// one CPU busy, so the usage the agent exports can be compared with it.
//
//	burn -memory-mib 64 -cpu 0.2
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	mib := flag.Int("memory-mib", 64, "MiB to allocate and keep touched")
	share := flag.Float64("cpu", 0.2, "share of one CPU to keep busy (0-1)")
	flag.Parse()
	if *mib < 0 || *share < 0 || *share > 1 {
		fmt.Fprintln(os.Stderr, "burn: -memory-mib must be >= 0 and -cpu between 0 and 1")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(1)
	mem := make([]byte, *mib<<20)
	touch := func() {
		for i := 0; i < len(mem); i += 4096 {
			mem[i]++
		}
	}
	touch()
	fmt.Printf("burn: holding %d MiB, burning %.2f of a CPU\n", *mib, *share)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	const period = 100 * time.Millisecond
	busy := time.Duration(float64(period) * *share)
	next := time.Now()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		for time.Since(start) < busy {
		}
		if n%50 == 0 {
			touch()
		}
		next = next.Add(period)
		time.Sleep(time.Until(next))
	}
}
