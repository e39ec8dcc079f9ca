package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/tools/bench"
)

func init() {
	register(command{name: "bench engine", summary: "storage engine: MapPartition and ReducePartition writes, commits, recovery; optionally against fio", run: runBenchEngine})
}

func runBenchEngine(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size, bufBytes, pool := config.Bytes(4<<30), config.Bytes(1<<20), config.Bytes(2<<30)
	dir := fs.String("dir", os.TempDir(), "directory on the disk to measure")
	fs.Var(&size, "size", "bytes each write phase stores (and fio writes)")
	writers := fs.Int("writers", 64, "concurrent MapPartition writers")
	subs := fs.Int("subpartitions", 1000, "subpartitions of each MapPartition")
	producers := fs.Int("producers", 1000, "producers pushing into the ReducePartitions")
	reduces := fs.Int("reduces", 1000, "ReducePartitions")
	pushers := fs.Int("pushers", 64, "producers running at once")
	partitions := fs.Int("partitions", 100000, "committed partitions for the recovery measurement (0: skip)")
	mapPhase := fs.Bool("map", true, "run the MapPartition phase (false: the ReducePartition phase alone)")
	fs.Var(&bufBytes, "buffer", "engine write buffer size")
	fs.Var(&pool, "pool", "buffer pool size")
	backend := fs.String("backend", diskio.BackendAuto, "IO backend: "+strings.Join(diskio.Backends, "|"))
	runs := fs.Int("runs", 1, "runs; medians are reported")
	withFio := fs.Bool("fio", false, "run fio's sequential write (O_DIRECT, io_uring, 1 MiB, depth 16, end_fsync) on the same directory before each run, and report the ratios")
	asJSON := fs.Bool("json", false, "end the output with one JSON object")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the runs to this file")
	memProfile := fs.String("memprofile", "", "write the allocations of the process, once the runs are done, to this file (pprof -sample_index=alloc_space)")
	timeline := fs.Bool("timeline", false, "print to stderr, every 100 ms of each write phase, the engine's and the device's write rates, the bytes waiting for the disk and the CPU use")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice bench engine [flags]")
		fmt.Fprintln(stderr, "\nWrites --size through concurrent MapPartition writers, then --size through producers pushing")
		fmt.Fprintln(stderr, "into ReducePartitions (producer commits, finalize), each on a fresh store under --dir, every")
		fmt.Fprintln(stderr, "byte fdatasynced and committed; then times the recovery of --partitions committed partitions.")
		fmt.Fprintln(stderr, "With --fio, fio's sequential write of the same size runs in the same run.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice bench engine: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "sluice bench engine: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "sluice bench engine: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		defer func() {
			f, err := os.Create(*memProfile)
			if err == nil {
				err = errors.Join(pprof.Lookup("allocs").WriteTo(f, 0), f.Close())
			}
			if err != nil {
				fmt.Fprintf(stderr, "sluice bench engine: %v\n", err)
			}
		}()
	}
	engineProcs() // as a worker runs its engine
	cfg := bench.EngineConfig{
		Dir: *dir, Size: int64(size), MapWriters: *writers, Subpartitions: *subs,
		Producers: *producers, Reduces: *reduces, Pushers: *pushers, Partitions: *partitions, SkipMap: !*mapPhase,
		Backend: *backend, BufferBytes: int(bufBytes), PoolBytes: int64(pool),
		Log: slog.New(slog.NewTextHandler(stderr, nil)),
	}
	if *timeline {
		cfg.Timeline = stderr
	}
	fmt.Fprintf(stdout, "%-4s %-10s %12s %12s %12s %12s %12s %12s\n", "run", "backend", "map MiB/s", "reduce MiB/s", "fio MiB/s", "commit p50", "commit p99", "map p99")
	n := 0
	rep, err := bench.EngineRuns(ctx, cfg, *runs, *withFio, func(r bench.EngineResult, f *bench.FioResult) {
		n++
		fw := "-"
		if f != nil {
			fw = fmt.Sprintf("%.0f", f.WriteMiBs)
		}
		backend, _, _ := strings.Cut(r.Backend, ",")
		fmt.Fprintf(stdout, "%-4d %-10s %12.0f %12.0f %12s %10.2fms %10.2fms %10.2fms\n", n, backend, r.MapWriteMiBs, r.ReduceWriteMiBs, fw, r.CommitP50Ms, r.CommitP99Ms, r.MapCommitP99Ms)
	})
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench engine: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "median of %d (GOMAXPROCS %d): map %.0f MiB/s, reduce %.0f MiB/s, producer commit p50 %.2f ms p99 %.2f ms, map commit p50 %.2f ms p99 %.2f ms",
		rep.Runs, rep.GoMaxProcs, rep.MapWriteMiBs, rep.ReduceWriteMiBs, rep.CommitP50Ms, rep.CommitP99Ms, rep.MapCommitP50Ms, rep.MapCommitP99Ms)
	if *withFio {
		fmt.Fprintf(stdout, "; fio write %.0f MiB/s; Sluice/fio: map %.1f%%, reduce %.1f%%", rep.FioWriteMiBs, 100*rep.MapVsFio, 100*rep.ReduceVsFio)
	}
	fmt.Fprintln(stdout)
	if rep.RecoveryPartitions > 0 {
		cache := "warm"
		if rep.RecoveryColdCache {
			cache = "cold"
		}
		fmt.Fprintf(stdout, "recovery of %d committed partitions: %.2f s (%s page cache; log %.2f s, walk %.2f s, compacted log %.2f s; created in %.1f s)\n",
			rep.RecoveryPartitions, rep.RecoverySecs, cache, rep.RecoveryLogSecs, rep.RecoveryWalkSecs, rep.RecoveryCompactSecs, rep.CreateSecs)
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintf(stderr, "sluice bench engine: %v\n", err)
			return 1
		}
	}
	return 0
}
