package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/sluice-shuffle/sluice/manager"
	"github.com/sluice-shuffle/sluice/manager/config"
)

func init() {
	register(command{name: "manager", summary: "run a manager (control plane; standalone, or HA through etcd)", run: runManager})
}

const managerEnvPrefix = "SLUICE_MANAGER"

func runManager(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := manager.DefaultConfig()
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv(managerEnvPrefix+"_CONFIG"), "YAML configuration file (keys as the flags below) [$"+managerEnvPrefix+"_CONFIG]")
	printConfig := fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	settings := config.Bind(fs, managerEnvPrefix, &cfg)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: sluice manager [flags]

Runs a Sluice manager: worker membership and heartbeats, job leases,
datasets, placement, location lookup, and release of data.

Without etcd endpoints the manager runs standalone (the default). With
--etcd-endpoints, run several managers with the same --cluster-id: one is
elected leader, the others stand by and redirect callers to it, and one of
them takes over within the etcd session TTL if the leader dies.

Settings come from, in increasing precedence: the defaults shown below, the
YAML file given by --config, SLUICE_MANAGER_* environment variables, and
flags. Unknown keys in the file are an error. Durations read like 2s or
500ms, sizes like 64MiB or 5GiB.

Endpoints: gRPC on --listen; /metrics, /healthz, /readyz and /leader on
--metrics-listen. SIGTERM or SIGINT stops it gracefully (a leader resigns
so that a standby takes over at once).

flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := loadSettings(fs, args, 0, settings, configPath, "manager", stderr); !ok {
		return code
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "sluice manager: invalid configuration:\n%v\n", err)
		return 2
	}
	if *printConfig {
		out, err := config.Dump(&cfg)
		if err != nil {
			fmt.Fprintf(stderr, "sluice manager: %v\n", err)
			return 1
		}
		if _, err := stdout.Write(out); err != nil {
			fmt.Fprintf(stderr, "sluice manager: %v\n", err)
			return 1
		}
		return 0
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		fmt.Fprintf(stderr, "sluice manager: log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s, err := manager.New(cfg, manager.WithLogger(log), manager.WithVersion(version))
	if err != nil {
		fmt.Fprintf(stderr, "sluice manager: %v\n", err)
		return 1
	}
	if err := s.Run(ctx); err != nil {
		log.Error("manager stopped with an error", "err", err)
		return 1
	}
	return 0
}
