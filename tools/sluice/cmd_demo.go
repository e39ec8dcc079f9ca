package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/tools/progress"
)

func init() {
	register(command{name: "demo", summary: "a TeraSort through a local cluster, validated: Sluice working, on your machine", run: runDemoCommand})
}

const demoEnvPrefix = "SLUICE_DEMO"

func runDemoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return demoMain(ctx, args, stdout, stderr, demoHooks{})
}

func demoMain(ctx context.Context, args []string, stdout, stderr io.Writer, hooks demoHooks) int {
	cfg := defaultDemoConfig()
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv(demoEnvPrefix+"_CONFIG"), "YAML configuration file (keys as the flags below) [$"+demoEnvPrefix+"_CONFIG]")
	settings := config.Bind(fs, demoEnvPrefix, &cfg)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: sluice demo [flags]

Starts a local cluster (as "sluice local": a manager and --workers workers in
this process, on a temporary directory unless --dir is given) and runs a
TeraSort through it: --producers tasks generate --records records of 100
bytes (a random 10-byte key, a 90-byte value), range-partitioned by key over
--consumers tasks that each read their range from every producer and sort
it. The job runs once per --modes entry: through MapPartitions (each
producer writes one partition, consumers read their subpartition from all)
and through ReducePartitions (producers push each record to its consumer's
partition, which the consumer reads whole).

Validation, as valsort's: every consumer's output is sorted, holds only keys
of its range, the ranges follow each other, and the record count and an
order-independent checksum of the output equal the input's. A failed
validation (or corrupt data reported by a reader) exits 1. The table of
phases goes to stdout; progress bars to stderr when it is a terminal.

Settings come from, in increasing precedence: the defaults shown below, the
YAML file given by --config, SLUICE_DEMO_* environment variables, and flags.

flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := loadSettings(fs, args, 0, settings, configPath, "demo", stderr); !ok {
		return code
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "sluice demo: invalid configuration:\n%v\n", err)
		return 2
	}
	log := newLogger(stderr, cfg.Local.LogLevel)
	var bar io.Writer
	if f, ok := stderr.(*os.File); ok {
		bar = progress.Terminal(f)
	}
	lc, err := startLocal(ctx, cfg.Local, log)
	if err != nil {
		fmt.Fprintf(stderr, "sluice demo: starting the local cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "sluice demo: TeraSort of %d records (%.1f MiB), %d producers x %d consumers, on %d local workers (manager %s, data in %s)\n",
		cfg.Records, float64(cfg.Records*recordSize)/(1<<20), cfg.Producers, cfg.Consumers, cfg.Local.Workers, lc.ManagerAddr(), lc.Dir())
	res, err := runDemo(ctx, cfg, lc, bar, hooks, log)
	printDemo(stdout, res)
	if cerr := lc.close(); cerr != nil {
		fmt.Fprintf(stderr, "sluice demo: stopping the local cluster: %v\n", cerr)
		if err == nil {
			return 1
		}
	}
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		fmt.Fprintf(stdout, "VALIDATION FAILED: %v\n", ve)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "sluice demo: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "validation passed: every output range sorted and in order, %d records and their checksum equal the input's in each shuffle\n", cfg.Records)
	return 0
}
