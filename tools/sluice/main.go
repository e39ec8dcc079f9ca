// Command sluice is the one Sluice binary: every process (manager, worker,
// local mode) and every operator tool (fsck, replay, bench) is a subcommand.
//
// Each subcommand lives in its own file and does little more than parse its
// flags and call the package that does the work, so that the tools stay
// libraries (see STYLE.md, "Tools are libraries with a thin main").
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand. run returns the process exit status.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands is filled by the init functions of the cmd_*.go files.
var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("sluice: duplicate command " + c.name)
	}
	commands[c.name] = c
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// dispatch runs the subcommand named by args. Subcommands with their own
// subcommands ("bench disk") are registered under the joined name.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	name := args[0]
	rest := args[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		if c, ok := commands[name+" "+rest[0]]; ok {
			return c.run(ctx, rest[1:], stdout, stderr)
		}
	}
	c, ok := commands[name]
	if !ok {
		if group := subcommandsOf(name); len(group) > 0 {
			fmt.Fprintf(stderr, "sluice %s: name one of: %s\n", name, strings.Join(group, ", "))
			return 2
		}
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	return c.run(ctx, rest, stdout, stderr)
}

func subcommandsOf(group string) []string {
	var names []string
	for n := range commands {
		if after, ok := strings.CutPrefix(n, group+" "); ok {
			names = append(names, after)
		}
	}
	sort.Strings(names)
	return names
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: sluice <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'sluice <command> --help' for the flags of a command.")
}
