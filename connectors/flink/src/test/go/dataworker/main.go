// Command dataworker runs the Sluice data plane (storage engine, read
// scheduler, data server: netsvc/worktest) on a temporary directory for the
// Flink connector's data-plane tests, until its standard input closes. It
// prints "addr host:port" once it listens. It is not a worker: it has no
// manager agent; the integration tests use "sluice worker" for that.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dataworker DIR")
		os.Exit(2)
	}
	w, err := worktest.New(worktest.Config{Dir: os.Args[1], PoolBytes: 64 << 20, BufferBytes: 1 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataworker:", err)
		os.Exit(1)
	}
	fmt.Printf("addr %s\n", w.Addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dataworker: shutdown:", err)
	}
	if err := w.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "dataworker: close:", err)
		os.Exit(1)
	}
}
