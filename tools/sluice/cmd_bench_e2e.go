package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"

	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/tools/bench"
)

func init() {
	register(command{name: "bench e2e", summary: "a whole shuffle through a worker process, against a local-disk shuffle in the same run", run: runBenchE2E})
}

func runBenchE2E(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench e2e", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size, pool, buffer, memory, window := config.Bytes(8<<30), config.Bytes(1<<30), config.Bytes(1<<20), config.Bytes(64<<20), config.Bytes(0)
	dir := fs.String("dir", os.TempDir(), "directory for the worker's data and the baseline's files (one disk)")
	fs.Var(&size, "size", "record bytes to shuffle")
	maps := fs.Int("maps", 64, "producers (map tasks)")
	reducers := fs.Int("reducers", 1000, "consumers (reduce tasks), one subpartition each")
	mode := fs.String("mode", "map", "map: MapPartitions (each producer writes one partition); reduce: ReducePartitions (producers push to per-subpartition partitions)")
	producers := fs.Int("producers", 4, "producers running at once")
	consumers := fs.Int("consumers", 8, "consumers running at once")
	recordBytes := fs.Int("record-size", 1000, "mean record size (records are 1/2 to 3/2 of it)")
	records := fs.String("records", "text", "record content: text (words; LZ4 stores ~55%) or incompressible (random bytes)")
	uncompressed := fs.Bool("uncompressed", false, "no LZ4 at all, on both sides")
	fs.Var(&memory, "memory", "each producer's spill budget")
	fs.Var(&window, "window", "each read channel's receive window (0: the client's default)")
	fs.Var(&pool, "worker-pool", "the worker's --pool-size")
	fs.Var(&buffer, "worker-buffer", "the worker's --buffer-size")
	dropCaches := fs.Bool("drop-caches", false, "drop the page cache between the baseline's write and read phases (root only), so that it reads from the disk like the worker")
	runs := fs.Int("runs", 3, "runs (each: Sluice and the baseline, alternating which goes first); medians are reported")
	asJSON := fs.Bool("json", false, "end the output with one JSON object")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (producers and consumers) to this file")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: sluice bench e2e [flags]

Shuffles --size record bytes from --maps producers to --reducers consumers
through one worker (this binary re-executed as "sluice worker" on a temporary
directory under --dir; producers and consumers run in this process), then the
same records through a local-disk baseline: the same sort-spill, buffers, LZ4
and CRCs written to one file per producer with an index of subpartition
ranges, fdatasynced, read back by range with pread, no network. Both sides
alternate; medians of --runs are reported, with CPU seconds per GiB (both
processes for Sluice) and the worker's peak RSS.

Records are text-like by default (words of a 5,000-word vocabulary drawn with
a Zipf law; LZ4 stores them at about 55%), --records incompressible makes
them random bytes; both sides shuffle exactly the same records, and the
consumers' record counts and checksums must match.
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || (*mode != "map" && *mode != "reduce") || (*records != "text" && *records != "incompressible") {
		fmt.Fprintf(stderr, "sluice bench e2e: bad arguments (mode %q, records %q, extra %q)\n", *mode, *records, fs.Args())
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench e2e: %v\n", err)
		return 1
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "sluice bench e2e: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "sluice bench e2e: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	cfg := bench.E2EConfig{
		Dir: *dir, Size: int64(size), Maps: *maps, Reducers: *reducers, Reduce: *mode == "reduce",
		Producers: *producers, Consumers: *consumers, RecordBytes: *recordBytes, Incompressible: *records == "incompressible",
		Uncompressed: *uncompressed, MemoryBytes: int(memory), WindowBytes: uint64(window),
		WorkerPool: int64(pool), WorkerBuffer: int64(buffer), DropCaches: *dropCaches,
		WorkerCommand: func(args ...string) *exec.Cmd { return exec.Command(exe, args...) },
		Log:           slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	fmt.Fprintf(stdout, "shuffle of %v (%s records of ~%d bytes), %d maps x %d reducers, %s partitions\n", size, *records, *recordBytes, *maps, *reducers, *mode)
	fmt.Fprintf(stdout, "%-4s %-8s %12s %8s %8s %12s %8s %8s %9s %9s %9s %7s\n", "run", "first", "sluice MiB/s", "write s", "read s", "local MiB/s", "write s", "read s", "cpu s/GiB", "local cpu", "rss MiB", "reads x")
	rep, err := bench.E2ERuns(ctx, cfg, *runs, func(i int, r bench.E2ERun) {
		first := "sluice"
		if r.BaselineFirst {
			first = "local"
		}
		gib := float64(size) / (1 << 30)
		fmt.Fprintf(stdout, "%-4d %-8s %12.0f %8.1f %8.1f %12.0f %8.1f %8.1f %9.2f %9.2f %9.0f %7.2f\n", i+1, first, r.SluiceMiBs, r.SluiceWriteSeconds, r.SluiceReadSeconds,
			r.BaselineMiBs, r.BaselineWriteSecond, r.BaselineReadSeconds, (r.SluiceCPU+r.WorkerCPU)/gib, r.BaselineCPU/gib, r.WorkerRSSMiB,
			float64(r.WorkerDiskReadBytes)/float64(max(r.StoredBytes, 1)))
	})
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench e2e: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "median of %d: Sluice %.0f MiB/s, local disk %.0f MiB/s, ratio %.2f; CPU %.2f s/GiB (local %.2f); worker peak RSS %.0f MiB with a %.0f MiB pool; stored %.0f%% of the record bytes, read from the disk %.2f times\n",
		rep.Runs, rep.SluiceMiBs, rep.BaselineMiBs, rep.Ratio, rep.CPUsPerGiB, rep.BaselineCPUsGiB, rep.WorkerRSSMiB, rep.WorkerPoolMiB, 100*rep.StoredRatio, rep.ReadAmplification)
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintf(stderr, "sluice bench e2e: %v\n", err)
			return 1
		}
	}
	return 0
}
