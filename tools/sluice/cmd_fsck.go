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
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/tools/bench"
	"github.com/sluice-shuffle/sluice/tools/fsck"
)

func init() {
	register(command{name: "fsck", summary: "verify the shuffle files of disk directories or single files", run: fsck.Main})
	register(command{name: "bench fsck", summary: "fsck's verify speed over written MapPartitions, optionally against fio", run: runBenchFsck})
}

func runBenchFsck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench fsck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size, fileBytes := config.Bytes(2<<30), config.Bytes(bench.DefaultFsckFileBytes)
	bufBytes, regionBytes := config.Bytes(bench.DefaultFsckBufferBytes), config.Bytes(bench.DefaultFsckRegionBytes)
	readBytes := config.Bytes(fsck.DefaultReadBytes)
	dir := fs.String("dir", os.TempDir(), "directory on the disk to measure (the benchmark works in DIR/sluice-bench-fsck)")
	fs.Var(&size, "size", "bytes of MapPartitions to write and verify")
	fs.Var(&fileBytes, "file-size", "bytes per MapPartition")
	fs.Var(&bufBytes, "buffer-size", "payload bytes per buffer")
	fs.Var(&regionBytes, "region-size", "bytes per region (one sort-spill)")
	subs := fs.Uint64("subpartitions", bench.DefaultFsckSubpartitions, "subpartitions per MapPartition")
	backend := fs.String("backend", diskio.BackendAuto, "IO backend: "+strings.Join(diskio.Backends, "|"))
	jobs := fs.Int("jobs", fsck.DefaultJobs, "files fsck verifies in parallel")
	depth := fs.Int("depth", fsck.DefaultReadsInFlight, "reads in flight per file")
	fs.Var(&readBytes, "read-size", "bytes per read")
	runs := fs.Int("runs", 1, "runs; medians are reported")
	withFio := fs.Bool("fio", false, "after each fsck run, read a file of the same size in the same directory with fio (--rw=read --direct=1 --ioengine=io_uring --bs=4M --iodepth=4) and report the ratio")
	fixedBufs := fs.Bool("fio-fixedbufs", false, "give fio registered buffers (--fixedbufs), as fsck's io_uring backend has where it may")
	keep := fs.Bool("keep", false, "keep the written disk and fio's file for the next run")
	asJSON := fs.Bool("json", false, "end the output with one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice bench fsck [flags]")
		fmt.Fprintln(stderr, "\nWrites MapPartitions and a commit log into a disk directory, then times `sluice fsck` over them")
		fmt.Fprintln(stderr, "(cold: O_DIRECT, or the page cache dropped). With --fio, fio reads as much in the same run.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice bench fsck: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *subs == 0 || *subs > uint64(layout.MaxSubpartitions) {
		// The count is a uint32 in the format: a larger value must not wrap.
		fmt.Fprintf(stderr, "sluice bench fsck: --subpartitions %d is out of range: a MapPartition has 1 to %d subpartitions\n", *subs, uint64(layout.MaxSubpartitions))
		return 2
	}
	cfg := bench.FsckConfig{
		Dir: *dir, Size: int64(size), FileBytes: int64(fileBytes), BufferBytes: int(bufBytes), RegionBytes: int64(regionBytes),
		Subpartitions: uint32(*subs), Backend: *backend, Jobs: *jobs, ReadsInFlight: *depth, ReadBytes: int(readBytes), Keep: *keep,
		FioFixedBufs: *fixedBufs,
		Log:          slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	fmt.Fprintf(stdout, "%-4s %12s %10s %12s %8s\n", "run", "fsck MiB/s", "fsck s", "fio MiB/s", "ratio")
	rep, err := bench.FsckRuns(ctx, cfg, *runs, *withFio, func(i int, r bench.FsckRun) {
		fio, ratio := "-", "-"
		if *withFio {
			fio, ratio = fmt.Sprintf("%.0f", r.FioReadMiBs), fmt.Sprintf("%.1f%%", 100*r.Ratio)
		}
		fmt.Fprintf(stdout, "%-4d %12.0f %10.2f %12s %8s\n", i, r.FsckMiBs, r.FsckSecs, fio, ratio)
	})
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench fsck: %v\n", err)
		return 1
	}
	mode := "buffered"
	if rep.Direct {
		mode = "O_DIRECT"
	}
	fmt.Fprintf(stdout, "median of %d over %d files (%.0f MiB; %s, %s, %d jobs, %d reads of %s in flight each): fsck %.0f MiB/s",
		rep.Runs, rep.Files, float64(rep.Bytes)/(1<<20), rep.Backend, mode, rep.Jobs, rep.Depth, config.Bytes(rep.ReadBytes), rep.FsckMiBs)
	if *withFio {
		fixed := ""
		if rep.FioFixedBufs {
			fixed = " (--fixedbufs)"
		}
		fmt.Fprintf(stdout, "; fio read%s %.0f MiB/s; fsck/fio %.1f%%", fixed, rep.FioReadMiBs, 100*rep.Ratio)
	}
	fmt.Fprintln(stdout)
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintf(stderr, "sluice bench fsck: %v\n", err)
			return 1
		}
	}
	return 0
}
