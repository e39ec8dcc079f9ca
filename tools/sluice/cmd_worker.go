package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/netsvc/server"
)

func init() {
	register(command{name: "worker", summary: "run a worker (storage engine, read schedulers, data server, manager agent)", run: runWorker})
}

const workerEnvPrefix = "SLUICE_WORKER"

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := defaultWorkerConfig()
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv(workerEnvPrefix+"_CONFIG"), "YAML configuration file (keys as the flags below) [$"+workerEnvPrefix+"_CONFIG]")
	printConfig := fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	settings := config.Bind(fs, workerEnvPrefix, &cfg)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: sluice worker --data-dirs DIR[,DIR...] [flags]

Runs a Sluice worker: one storage engine over the data directories (one per
disk; tag each [ssd] or [hdd] to override the detected type), a read
scheduler per disk, and the data-plane server clients write to and read
from. With --managers or --etcd-endpoints the worker registers with the
manager, reports its partitions and load, and applies its release orders;
without them it serves clients that use a static worker list.

Memory: --pool-size is one slab of --buffer-size buffers shared by the disks'
write buffers (--write-share), the read schedulers (--read-share) and the
connections' staging; the process needs the pool plus a few tens of MiB.

Settings come from, in increasing precedence: the defaults shown below, the
YAML file given by --config, SLUICE_WORKER_* environment variables, and
flags. Unknown keys in the file are an error. Durations read like 5s or
500ms, sizes like 64MiB or 1GiB.

Endpoints: the data plane on --listen; /metrics (sluice_worker_*), /healthz
and /readyz on --metrics-listen. SIGTERM or SIGINT stops it gracefully: no
new connections, channels in flight finish within --shutdown-timeout
(commits complete), committed data stays on disk.

flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := loadSettings(fs, args, 0, settings, configPath, "worker", stderr); !ok {
		return code
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "sluice worker: invalid configuration:\n%v\n", err)
		return 2
	}
	if *printConfig {
		out, err := config.Dump(&cfg)
		if err != nil {
			fmt.Fprintf(stderr, "sluice worker: %v\n", err)
			return 1
		}
		stdout.Write(out)
		return 0
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // checked by validate
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	debug.SetMemoryLimit(server.RuntimeMemoryLimit) // the pool is outside the Go heap
	w, err := startWorker(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "sluice worker: %v\n", err)
		return 1
	}
	// The data address on stdout, for scripts and the e2e bench that
	// start a worker on port 0.
	fmt.Fprintf(stdout, "sluice worker: listening on %s\n", w.Addr())
	if err := w.run(ctx); err != nil {
		log.Error("sluice worker: stopped with an error", "err", err)
		return 1
	}
	return 0
}
