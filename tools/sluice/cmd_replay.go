package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluice-shuffle/sluice/client"
	"github.com/sluice-shuffle/sluice/manager/api"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/tools/replay"
	"github.com/sluice-shuffle/sluice/tools/replay/runner"
)

func init() {
	register(command{name: "replay", summary: "replay a recorded shuffle trace through Sluice: throughput, latencies, seeks, an SVG chart", run: runReplay})
	register(command{name: "replay gen", summary: "generate a trace of a known shape (terasort, tpcds, tiny)", run: runReplayGen})
}

const replayEnvPrefix = "SLUICE_REPLAY"

// replayConfig is the configuration of `sluice replay`: the replay, and
// the local cluster it runs on when no running cluster is named.
type replayConfig struct {
	Local           localConfig `yaml:",inline"`
	Manager         []string    `yaml:"manager" help:"replay against a running cluster: its manager address(es) (empty: an in-process local cluster)"`
	WorkerAddresses []string    `yaml:"worker-addresses" help:"replay against running workers without a manager: their data addresses"`
	Scale           float64     `yaml:"scale" help:"multiplies every byte count of the trace"`
	RecordSize      int         `yaml:"record-size" help:"size of the records written"`
	Parallel        int         `yaml:"parallel" help:"producers, and consumers, running at once"`
	SVG             string      `yaml:"svg" help:"the SVG chart of throughput over time (default: TRACE-NAME.svg in the current directory; - for none)"`
}

func defaultReplayConfig() replayConfig {
	return replayConfig{Local: defaultLocalConfig(), Scale: 1, RecordSize: 1000, Parallel: 8}
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := defaultReplayConfig()
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv(replayEnvPrefix+"_CONFIG"), "YAML configuration file (keys as the flags below) [$"+replayEnvPrefix+"_CONFIG]")
	asJSON := fs.Bool("json", false, "end the output with one JSON object")
	settings := config.Bind(fs, replayEnvPrefix, &cfg)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: sluice replay [flags] TRACE

Replays a trace (tools/replay/FORMAT.md; testdata/traces has three) through
Sluice: every producer writes its bytes to its subpartitions when it
arrives, every consumer reads its range once its dataset's producers have
committed, and every subpartition's bytes read must equal the bytes
written. Reports throughput, producer commit and consumer latency
percentiles, and, in-process, the seeks of the workers' disk reads and their
time on the scheduler's HDD model; writes an SVG chart of throughput over
time.

By default the replay runs against an in-process local cluster (as "sluice
local"; its settings below); --manager or --worker-addresses name a running
cluster instead.

flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := loadSettings(fs, args, 1, settings, configPath, "replay", stderr); !ok {
		return code
	}
	path := fs.Arg(0)
	if cfg.Scale <= 0 || cfg.RecordSize < 1 || cfg.Parallel < 1 {
		fmt.Fprintf(stderr, "sluice replay: scale %g, record-size %d and parallel %d must be positive\n", cfg.Scale, cfg.RecordSize, cfg.Parallel)
		return 2
	}
	local := len(cfg.Manager) == 0 && len(cfg.WorkerAddresses) == 0
	if local {
		if err := cfg.Local.validate(); err != nil {
			fmt.Fprintf(stderr, "sluice replay: invalid configuration:\n%v\n", err)
			return 2
		}
	}
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(stderr, "sluice replay: %v\n", err)
		return 2
	}
	tr, err := replay.Decode(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "sluice replay: %s: %v\n", path, err)
		return 2
	}
	log := newLogger(stderr, cfg.Local.LogLevel)
	rc := runner.Config{Scale: cfg.Scale, RecordBytes: cfg.RecordSize, Parallel: cfg.Parallel, Log: log,
		Client: client.Config{Workers: cfg.WorkerAddresses, Managers: api.FollowerConfig{Managers: cfg.Manager}, ClientID: "sluice-replay", Log: log}}
	if local {
		lcfg := cfg.Local
		lcfg.traceReads = true
		lc, err := startLocal(ctx, lcfg, log)
		if err != nil {
			fmt.Fprintf(stderr, "sluice replay: starting the local cluster: %v\n", err)
			return 1
		}
		defer func() {
			if err := lc.close(); err != nil {
				fmt.Fprintf(stderr, "sluice replay: stopping the local cluster: %v\n", err)
			}
		}()
		lc.readModel() // nothing read yet; starts the trace clean
		rc.Client.Managers.Managers = []string{lc.ManagerAddr()}
		rc.Model = lc.readModel
	}
	rep, err := runner.Run(ctx, tr, rc)
	if err != nil {
		fmt.Fprintf(stderr, "sluice replay: %v\n", err)
		return 1
	}
	replay.WriteTable(stdout, rep)
	svg := cfg.SVG
	if svg == "" {
		svg = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)) + ".svg"
	}
	if svg != "-" {
		out, err := os.Create(svg)
		if err == nil {
			err = replay.WriteSVG(out, rep)
			err = errors.Join(err, out.Close())
		}
		if err != nil {
			fmt.Fprintf(stderr, "sluice replay: chart: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "chart: %s\n", svg)
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(struct {
			Bench string `json:"bench"`
			*replay.Report
		}{"replay", rep}); err != nil {
			fmt.Fprintf(stderr, "sluice replay: %v\n", err)
			return 1
		}
	}
	return 0
}

func runReplayGen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	shape := fs.String("shape", "terasort", "trace shape: "+strings.Join(replay.Shapes, ", "))
	seed := fs.Uint64("seed", 1, "random seed (the same seed makes the same trace)")
	out := fs.String("out", "", "file to write (default: stdout)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	tr, err := replay.Generate(*shape, *seed)
	if err != nil {
		fmt.Fprintf(stderr, "sluice replay gen: %v\n", err)
		return 2
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintf(stderr, "sluice replay gen: %v\n", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	if err := replay.Encode(w, tr); err != nil {
		fmt.Fprintf(stderr, "sluice replay gen: %v\n", err)
		return 1
	}
	return 0
}
