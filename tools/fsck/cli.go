package fsck

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/tools/progress"
)

// Exit statuses of Main.
const (
	ExitClean   = 0 // every file verified and matches the commit log
	ExitCorrupt = 1 // corruption found
	ExitError   = 2 // usage error, or a file or disk could not be checked
)

// Main is `sluice fsck`: it parses args, runs Check, Describe or Restore,
// prints to stdout (and a progress bar and warnings to stderr), and returns
// the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fsck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	readBytes := config.Bytes(DefaultReadBytes)
	asJSON := fs.Bool("json", false, "print one JSON object per file and a summary object last")
	quiet := fs.Bool("quiet", false, "leave out OK and OTHER files")
	quarantine := fs.String("quarantine", "", "move CORRUPT partitions into `DIR` (keeping their paths; never deleting) and release them in the disk's commit log")
	restore := fs.String("restore", "", "undo the quarantine recorded in `DIR`: move its files back and re-commit them (arguments, if any, name which)")
	describe := fs.String("describe", "", "print `FILE` as decoded structure and annotated hex")
	payloadBytes := fs.Int("payload-bytes", 16, "with --describe: bytes of each payload to show")
	maxItems := fs.Int("max-items", 0, "with --describe: stop after this many buffers, segments or records (0: all)")
	backend := fs.String("backend", diskio.BackendAuto, "IO backend: "+strings.Join(diskio.Backends, "|"))
	jobs := fs.Int("jobs", DefaultJobs, "files verified in parallel")
	depth := fs.Int("depth", DefaultReadsInFlight, "reads in flight per file")
	fs.Var(&readBytes, "read-size", "bytes per read (a multiple of 4KiB)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice fsck [flags] DISK_DIR|FILE...")
		fmt.Fprintln(stderr, "       sluice fsck --describe FILE")
		fmt.Fprintln(stderr, "       sluice fsck --restore QUARANTINE_DIR [FILE...]")
		fmt.Fprintln(stderr, `
Verifies a worker's disk directories (IDENTITY, COMMITLOG, data/...) or single files: every header,
version, buffer and segment CRC, index and total, and each partition against the disk's commit log.
One line per file: OK, CORRUPT (path, offset, what), INCOMPLETE (never committed), ERROR (unreadable,
or written by a newer Sluice) or OTHER (not a Sluice file; left alone). A file given alone is checked
for its format; its commit state is unknown. Exit status: 0 all clean, 1 corruption found, 2 usage
or IO error. A progress bar goes to stderr when it is a terminal.`)
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	paths, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return ExitClean
	}
	if err != nil {
		return ExitError
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sluice fsck: "+format+"\n", a...)
		return ExitError
	}
	switch {
	case *jobs < 1:
		return usageErr("--jobs must be at least 1")
	case *depth < 1:
		return usageErr("--depth must be at least 1")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := Options{Backend: *backend, Jobs: *jobs, ReadsInFlight: *depth, ReadBytes: int(readBytes), Quarantine: *quarantine, Log: log}

	switch {
	case *describe != "":
		if len(paths) > 0 || *quarantine != "" || *restore != "" {
			return usageErr("--describe takes one file and no other paths, --quarantine or --restore")
		}
		if err := Describe(stdout, *describe, opts, layout.DescribeOptions{PayloadBytes: *payloadBytes, MaxItems: *maxItems}); err != nil {
			return usageErr("%v", err)
		}
		return ExitClean
	case *restore != "":
		if *quarantine != "" {
			return usageErr("--restore and --quarantine exclude each other")
		}
		return runRestore(*restore, paths, *asJSON, stdout, stderr)
	case len(paths) == 0:
		fs.Usage()
		return usageErr("name at least one disk directory or file")
	}

	if f, ok := stderr.(*os.File); ok {
		opts.Progress = progress.Terminal(f)
	}
	var rep Reporter = &TextReporter{W: stdout}
	if *asJSON {
		rep = NewJSONReporter(stdout)
	}
	sum, err := Check(ctx, paths, opts, func(r *Result) {
		if *quiet && (r.Status == StatusOK || r.Status == StatusOther) {
			return
		}
		rep.Report(r)
	})
	if err != nil {
		return usageErr("%v", err)
	}
	if err := rep.Finish(&sum); err != nil {
		return usageErr("writing the report: %v", err)
	}
	return sum.Exit
}

// parseInterleaved parses flags that may come before, between or after the
// paths (`sluice fsck /disk --json`); everything after "--" is a path.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var paths []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return paths, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(paths, rest...), nil
		}
		paths = append(paths, rest[0])
		args = rest[1:]
	}
}

func runRestore(qdir string, only []string, asJSON bool, stdout, stderr io.Writer) int {
	enc := json.NewEncoder(stdout)
	n := 0
	failed, err := Restore(qdir, only, func(r *RestoreResult) {
		n++
		if asJSON {
			if err := enc.Encode(r); err != nil {
				fmt.Fprintf(stderr, "sluice fsck: %v\n", err)
			}
			return
		}
		path := r.Disk + "/" + r.File
		switch {
		case r.Error != "":
			fmt.Fprintf(stdout, "%-10s  %s: %s\n", "FAILED", path, r.Error)
		default:
			var did []string
			if r.MovedBack {
				did = append(did, "moved back from "+r.From)
			}
			if r.Recommitted {
				did = append(did, fmt.Sprintf("commit recorded again at LSN %d", r.LSN))
			}
			fmt.Fprintf(stdout, "%-10s  %s: %s\n", "RESTORED", path, strings.Join(did, "; "))
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "sluice fsck: %v\n", err)
		return ExitError
	}
	if !asJSON {
		fmt.Fprintf(stdout, "fsck: restored %d of %d quarantined partitions from %s\n", n-failed, n, qdir)
	}
	if failed > 0 {
		return ExitError
	}
	return ExitClean
}
