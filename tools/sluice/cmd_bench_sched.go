package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/tools/bench"
)

func init() {
	register(command{name: "bench sched", summary: "the disk read scheduler: elevator vs FIFO, all consumers at once and staggered, against fio", run: runBenchSched})
}

func runBenchSched(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench sched", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := bench.DefaultSchedConfig("")
	fileBytes, buffer, budget := config.Bytes(def.FileBytes), config.Bytes(def.BufferBytes), config.Bytes(def.BudgetBytes)
	maxRead, credit, cache := config.Bytes(def.MaxReadBytes), config.Bytes(def.CreditBytes), config.Bytes(def.CacheBytes)
	dir := fs.String("dir", "", "data directory of the storage engine holding the dataset; a dataset of the same shape already there is reused, and kept (default: a temporary directory, removed at the end)")
	files := fs.Int("files", def.Files, "MapPartition files (producers)")
	subs := fs.Int("subpartitions", def.Subpartitions, "subpartitions (consumers)")
	regions := fs.Int("regions", def.Regions, "regions per file")
	fs.Var(&fileBytes, "file-size", "data bytes per file")
	fs.Var(&buffer, "buffer", "pool buffer size: one IO request, one read-ahead slot")
	fs.Var(&budget, "budget", "the scheduler's read-buffer share")
	fs.Var(&maxRead, "max-read", "largest merged read")
	fs.Var(&credit, "credit", "credit window of every reader")
	fs.Var(&cache, "cache", "read-ahead cache budget, part of --budget (at most half of it; 0: the scheduler's default, half)")
	noVerify := fs.Bool("no-verify", false, "skip the buffer CRC checks the network server makes on every chunk")
	depth := fs.Int("depth", def.Depth, "elevator reads in flight (FIFO gets as many requests in flight)")
	window := fs.Int("window", def.Window, "staggered case: consumers reading at once, in subpartition order")
	drainers := fs.Int("drainers", def.Drainers, "goroutines playing the network server")
	backend := fs.String("backend", diskio.BackendAuto, "IO backend: "+strings.Join(diskio.Backends, "|"))
	runs := fs.Int("runs", 1, "runs of every case; medians are reported")
	noFio := fs.Bool("no-fio", false, "skip fio's sequential read of the same size")
	asJSON := fs.Bool("json", false, "end the output with one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice bench sched [flags]")
		fmt.Fprintln(stderr, "\nWrites --files MapPartitions of --subpartitions consumers through the storage engine (or reuses")
		fmt.Fprintln(stderr, "them in --dir), then reads every consumer's extents of every file through the disk read scheduler:")
		fmt.Fprintln(stderr, "with the elevator and with FIFO, all consumers at once, and staggered (--window consumers at a")
		fmt.Fprintln(stderr, "time) with and without read-ahead.")
		fmt.Fprintln(stderr, "Seeks and model times replay each run's reads on a 7200 rpm HDD model. fio reads as many bytes")
		fmt.Fprintln(stderr, "sequentially in the same directory, in the same run.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice bench sched: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "sluice-bench-sched-")
		if err != nil {
			fmt.Fprintf(stderr, "sluice bench sched: %v\n", err)
			return 1
		}
		defer func() {
			if err := os.RemoveAll(tmp); err != nil {
				fmt.Fprintf(stderr, "sluice bench sched: %v\n", err)
			}
		}()
		*dir = tmp
	}
	engineProcs() // as a worker runs its engine
	cfg := bench.SchedConfig{
		Dir: *dir, Files: *files, Subpartitions: *subs, Regions: *regions, FileBytes: int64(fileBytes),
		BufferBytes: int(buffer), BudgetBytes: int64(budget), MaxReadBytes: int(maxRead), Depth: *depth,
		CreditBytes: int64(credit), Window: *window, Drainers: *drainers, Backend: *backend,
		CacheBytes: int64(cache), NoVerify: *noVerify,
		Log: slog.New(slog.NewTextHandler(stderr, nil)),
	}
	fmt.Fprintf(stdout, "%-4s %-9s %-10s %-9s %10s %8s %9s %10s %9s %11s %9s\n",
		"run", "policy", "consumers", "readahead", "MiB/s", "reads", "pieces", "HDD seeks", "HDD s", "cache hits", "max wait")
	rep, err := bench.SchedRuns(ctx, cfg, *runs, !*noFio, func(run int, r bench.SchedRun) {
		if r.Policy == "fio" {
			fmt.Fprintf(stdout, "%-4d %-9s %-10s %-9s %10.0f\n", run, "fio", "sequential", "-", r.MiBs)
			return
		}
		who := "all"
		if r.Staggered {
			who = "staggered"
		}
		fmt.Fprintf(stdout, "%-4d %-9s %-10s %-9t %10.0f %8d %9d %10d %9.1f %11d %8.3fs\n",
			run, r.Policy, who, r.ReadAhead, r.MiBs, r.Reads, r.Pieces, r.Seeks, r.ModelS, r.CacheHits, r.MaxWaitS)
	})
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench sched: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "median of %d: elevator %.0f MiB/s, FIFO %.0f MiB/s; HDD model: seeks %.0f vs %.0f (%.0fx fewer), %.1f s vs %.1f s (%.1fx less); staggered %.0f MiB/s with read-ahead, %.0f without",
		rep.Runs, rep.ElevatorMiBs, rep.FIFOMiBs, rep.ElevatorSeeks, rep.FIFOSeeks, rep.SeekRatio,
		rep.ElevatorModelS, rep.FIFOModelS, rep.ModelRatio, rep.StaggeredRAMiBs, rep.StaggeredNoRAMiBs)
	if rep.FioReadMiBs > 0 {
		fmt.Fprintf(stdout, "; fio read %.0f MiB/s, elevator/fio %.1f%%", rep.FioReadMiBs, 100*rep.ElevatorVsFio)
	}
	fmt.Fprintln(stdout)
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintf(stderr, "sluice bench sched: %v\n", err)
			return 1
		}
	}
	return 0
}
