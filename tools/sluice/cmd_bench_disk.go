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
	register(command{name: "bench disk", summary: "sequential write+read through the IO seam, optionally against fio", run: runBenchDisk})
}

func runBenchDisk(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench disk", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size, block := config.Bytes(2<<30), config.Bytes(1<<20)
	dir := fs.String("dir", os.TempDir(), "directory on the disk to measure")
	fs.Var(&size, "size", "bytes to write, then read")
	fs.Var(&block, "block", "bytes per request")
	depth := fs.Int("depth", 16, "requests in flight")
	backend := fs.String("backend", diskio.BackendAuto, "IO backend: "+strings.Join(diskio.Backends, "|"))
	runs := fs.Int("runs", 1, "runs; medians are reported")
	withFio := fs.Bool("fio", false, "also run fio with the same pattern on the same directory, alternating with Sluice, and report the ratios")
	fioFixed := fs.Bool("fio-fixedbufs", false, "give fio registered buffers (--fixedbufs), as the uring backend has")
	asJSON := fs.Bool("json", false, "end the output with one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice bench disk [flags]")
		fmt.Fprintln(stderr, "\nWrites a file sequentially through the engine's IO seam (preallocated, O_DIRECT, final")
		fmt.Fprintln(stderr, "fdatasync included), then reads it back. With --fio, fio runs the same pattern in the same run.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice bench disk: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg := bench.DiskConfig{
		Dir: *dir, Size: int64(size), Block: int(block), Depth: *depth, Backend: *backend,
		Log: slog.New(slog.NewTextHandler(stderr, nil)), FioFixedBufs: *fioFixed,
	}
	fmt.Fprintf(stdout, "%-4s %-8s %-9s %-7s %6s %12s %12s %12s %12s\n", "run", "backend", "mode", "block", "depth", "write MiB/s", "read MiB/s", "fio write", "fio read")
	n := 0
	rep, err := bench.DiskRuns(ctx, cfg, *runs, *withFio, func(r bench.DiskResult, f *bench.FioResult) {
		n++
		mode := "direct"
		if !r.Direct {
			mode = "buffered"
		}
		fw, fr := "-", "-"
		if f != nil {
			fw, fr = fmt.Sprintf("%.0f", f.WriteMiBs), fmt.Sprintf("%.0f", f.ReadMiBs)
		}
		fmt.Fprintf(stdout, "%-4d %-8s %-9s %-7s %6d %12.0f %12.0f %12s %12s\n", n, r.Backend, mode, config.Bytes(r.BlockBytes), r.Depth, r.WriteMiBs, r.ReadMiBs, fw, fr)
	})
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench disk: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "median of %d: write %.0f MiB/s, read %.0f MiB/s", rep.Runs, rep.WriteMiBs, rep.ReadMiBs)
	if *withFio {
		fmt.Fprintf(stdout, "; fio write %.0f MiB/s, read %.0f MiB/s; Sluice/fio: write %.1f%%, read %.1f%%",
			rep.FioWriteMiBs, rep.FioReadMiBs, 100*rep.WriteRatio, 100*rep.ReadRatio)
	}
	fmt.Fprintln(stdout)
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintf(stderr, "sluice bench disk: %v\n", err)
			return 1
		}
	}
	return 0
}
