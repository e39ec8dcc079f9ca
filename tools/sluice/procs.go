package main

import (
	"os"
	"runtime"
	"sync"
)

var engineProcsOnce sync.Once

// engineProcs gives a process that runs storage engines one P more than Go
// gives it by default (the CPUs it may use), unless GOMAXPROCS is set in the
// environment. The goroutines that feed a disk (its io_uring owner, which
// also completes the writes and submits the queued ones) wait in the Go scheduler's run queues
// behind whatever else is runnable there, each of which may run for a 10 ms
// slice: with producers busy on every P, the disk's queue ran short while
// they waited. With a P more than CPUs the kernel's scheduler interleaves
// the threads at its own, finer grain. sluice bench engine, ReducePartition
// phase on two CPUs, three alternating runs each: 1169 MiB/s at the median
// with 2 Ps, 1354 with 3, 1312 with 4. Setting GOMAXPROCS this way stops
// the runtime from following a container's CPU limit as it changes (Go
// 1.25 and later); the limit at start still counts. Worker and local mode
// (its workers run in the process) and the engine benchmarks call it.
func engineProcs() {
	engineProcsOnce.Do(func() {
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
		}
	})
}
