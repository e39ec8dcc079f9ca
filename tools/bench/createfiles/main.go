// Command createfiles times file creation in a directory, the way a
// ReducePartition phase creates its files: each round makes a new
// directory, creates -files files in it with open(O_CREAT|O_EXCL), and
// removes them all. With -deleted N it first creates and removes N files,
// so that the rounds meet N recently freed inodes. (chattr +T on -dir
// spreads the rounds' directories, as the engine's data/.) BENCHMARKS.md
// ("Creating a stage's files") quotes it; run it under perf record -g to
// see where the time goes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "parent directory of the rounds' directories")
	files := flag.Int("files", 1000, "files per round")
	rounds := flag.Int("rounds", 6, "rounds")
	deleted := flag.Int("deleted", 0, "files created and removed before the rounds")
	flag.Parse()
	if err := run(*dir, *files, *rounds, *deleted); err != nil {
		fmt.Fprintln(os.Stderr, "createfiles:", err)
		os.Exit(1)
	}
}

func run(dir string, files, rounds, deleted int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if deleted > 0 {
		if _, err := round(dir, "deleted", deleted); err != nil {
			return err
		}
	}
	for i := range rounds {
		el, err := round(dir, fmt.Sprintf("round%d", i), files)
		if err != nil {
			return err
		}
		fmt.Printf("round %d: %d files in %v, %.0f µs a file\n", i, files, el.Round(time.Microsecond), float64(el.Microseconds())/float64(files))
	}
	return nil
}

// round creates n files in a new directory dir/name, timed, and removes
// the directory.
func round(dir, name string, n int) (time.Duration, error) {
	d := filepath.Join(dir, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		return 0, err
	}
	start := time.Now()
	for k := range n {
		fd, err := unix.Open(filepath.Join(d, fmt.Sprintf("f%d", k)), unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return 0, fmt.Errorf("create: %w", err)
		}
		unix.Close(fd)
	}
	el := time.Since(start)
	return el, os.RemoveAll(d)
}
