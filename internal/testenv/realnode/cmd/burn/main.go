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
	// Spin while the process's CPU time is behind share x elapsed time,
	// sleep otherwise: the share holds on average even when the machine is
	// busy and a spin is preempted (a wall-clock duty cycle would then burn
	// less than asked).
	begin, cpu0 := time.Now(), cpuTime()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		if n%1000 == 0 {
			touch()
		}
		if float64(cpuTime()-cpu0) < *share*float64(time.Since(begin)) {
			for i := 0; i < 100000; i++ {
			}
			continue
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
