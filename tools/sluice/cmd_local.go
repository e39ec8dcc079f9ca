package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/sluice-shuffle/sluice/manager/config"
)

func init() {
	register(command{name: "local", summary: "a manager and N workers in one process: Sluice to try, no cluster", run: runLocal})
}

// loadSettings parses the flags of a command whose settings bind to cfg
// (config.Bind) and takes nargs arguments, then overlays --config's file,
// the environment and the flags. It returns false with the exit status
// when the command must stop.
func loadSettings(fs *flag.FlagSet, args []string, nargs int, settings *config.Flags, configPath *string, cmd string, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() != nargs {
		if nargs > 0 {
			fs.Usage()
			return 2, false
		}
		fmt.Fprintf(stderr, "sluice %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2, false
	}
	if err := settings.Load(*configPath); err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return 2, false
	}
	return 0, true
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated with the configuration
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func runLocal(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := defaultLocalConfig()
	cfg.LogLevel = "info"
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv(localEnvPrefix+"_CONFIG"), "YAML configuration file (keys as the flags below) [$"+localEnvPrefix+"_CONFIG]")
	settings := config.Bind(fs, localEnvPrefix, &cfg)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: sluice local [flags]

Runs a whole Sluice cluster in this process: a manager and --workers
workers, each worker with its own directory under --dir (a temporary one,
removed on exit, by default). It prints the manager's address, which Go
clients (client.Config.Managers) and the Flink connector use, and the
workers' data addresses, then serves until SIGTERM or SIGINT, when it stops
gracefully (channels in flight finish; with --dir, data stays on disk and a
later "sluice local --dir" recovers it).

Settings come from, in increasing precedence: the defaults shown below, the
YAML file given by --config, SLUICE_LOCAL_* environment variables, and
flags. Unknown keys in the file are an error.

flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := loadSettings(fs, args, 0, settings, configPath, "local", stderr); !ok {
		return code
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "sluice local: invalid configuration:\n%v\n", err)
		return 2
	}
	lc, err := startLocal(ctx, cfg, newLogger(stderr, cfg.LogLevel))
	if err != nil {
		fmt.Fprintf(stderr, "sluice local: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "sluice local: manager %s, data in %s\n", lc.ManagerAddr(), lc.Dir())
	for i, w := range lc.workers {
		fmt.Fprintf(stdout, "sluice local: worker %d data plane %s\n", i, w.Addr())
	}
	<-ctx.Done()
	if err := lc.close(); err != nil {
		fmt.Fprintf(stderr, "sluice local: stopping: %v\n", err)
		return 1
	}
	return 0
}
