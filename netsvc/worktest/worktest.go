// Package worktest runs a Sluice data plane for tests and benchmarks: a
// storage engine over a temporary directory, a read scheduler per disk and
// the data server, on a loopback port — in this process (Start), or in a
// child process that re-executes the test binary (StartProcess, with
// RunChild in TestMain), so that a test can kill the worker with SIGKILL.
//
// It is not the worker: the real one (tools/sluice, "sluice worker") adds
// the manager agent, configuration and metrics. This package assembles only
// what the data-plane tests need.
package worktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/netsvc/server"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// Config sizes a worker. Zero values are small test defaults.
type Config struct {
	Dir         string // data directory; default a new temporary one
	Disks       int    // data directories under Dir (default 1)
	Backend     string // IO backend ("" auto)
	BufferBytes int    // pool buffer size (default 64 KiB)
	PoolBytes   int64  // pool size (default 16 MiB)
	// ReadShare is the fraction of the pool for read buffers (default 3/8).
	ReadShare float64
	// Server tunes the server; Store and Scheduler are filled in.
	Server server.Config
	Log    *slog.Logger
}

// Worker is a running data plane.
type Worker struct {
	Store  *engine.Store
	Server *server.Server
	Pool   *mem.Pool
	Scheds map[*engine.Disk]*scheduler.Scheduler
	Addr   string
	Dir    string

	lis  net.Listener
	done chan error
}

// New starts a worker.
func New(cfg Config) (*Worker, error) {
	if cfg.BufferBytes == 0 {
		cfg.BufferBytes = 64 << 10
	}
	if cfg.PoolBytes == 0 {
		cfg.PoolBytes = 16 << 20
	}
	if cfg.Disks == 0 {
		cfg.Disks = 1
	}
	if cfg.ReadShare == 0 {
		cfg.ReadShare = 3.0 / 8
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	pool, err := mem.New(mem.Config{BufferBytes: cfg.BufferBytes, Buffers: int(cfg.PoolBytes / int64(cfg.BufferBytes))})
	if err != nil {
		return nil, err
	}
	ecfg := engine.Config{Backend: cfg.Backend, Pool: pool, ReserveBytes: -1, HealthInterval: -1, Log: cfg.Log,
		WriteBytesPerDisk: cfg.PoolBytes / 2 / int64(cfg.Disks)}
	for i := range cfg.Disks {
		ecfg.Dirs = append(ecfg.Dirs, engine.DirConfig{Path: filepath.Join(cfg.Dir, fmt.Sprintf("disk%d", i))})
	}
	store, err := engine.Open(context.Background(), ecfg)
	if err != nil {
		return nil, errors.Join(err, pool.Close())
	}
	w := &Worker{Store: store, Pool: pool, Scheds: map[*engine.Disk]*scheduler.Scheduler{}, Dir: cfg.Dir, done: make(chan error, 1)}
	readBufs := max(int(float64(pool.Stats().Buffers)*cfg.ReadShare)/cfg.Disks, 4)
	for _, d := range store.Disks() {
		sc, err := scheduler.New(scheduler.Config{IO: d.IO(), Buffers: pool.NewShare("read "+d.Path(), readBufs)})
		if err != nil {
			w.closeStore()
			return nil, err
		}
		w.Scheds[d] = sc
	}
	scfg := cfg.Server
	scfg.Store = store
	scfg.Scheduler = func(d *engine.Disk) *scheduler.Scheduler { return w.Scheds[d] }
	if scfg.Log == nil {
		scfg.Log = cfg.Log
	}
	srv, err := server.New(scfg)
	if err != nil {
		w.closeStore()
		return nil, err
	}
	w.Server = srv
	w.lis, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.closeStore()
		return nil, err
	}
	w.Addr = w.lis.Addr().String()
	go func() { w.done <- srv.Serve(w.lis) }()
	return w, nil
}

// Start starts a worker for a test and stops it at the end, checking that
// every pool buffer came back.
func Start(tb testing.TB, cfg Config) *Worker {
	tb.Helper()
	if cfg.Dir == "" {
		cfg.Dir = tb.TempDir()
	}
	w, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := w.Close(); err != nil {
			tb.Error(err)
		}
	})
	return w
}

// Shutdown stops the server gracefully within ctx, then the schedulers and
// the store.
func (w *Worker) Shutdown(ctx context.Context) error {
	err := w.Server.Shutdown(ctx)
	if serr := <-w.done; serr != nil && !errors.Is(serr, server.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, w.closeStore())
}

// Close stops the worker at once.
func (w *Worker) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.Shutdown(ctx)
}

func (w *Worker) closeStore() error {
	for _, sc := range w.Scheds {
		sc.Close()
	}
	err := w.Store.Close()
	if st := w.Pool.Stats(); st.InUse != 0 {
		err = errors.Join(err, fmt.Errorf("worktest: %d pool buffers still in use at close", st.InUse))
		return err
	}
	return errors.Join(err, w.Pool.Close())
}

// PoolInUse is the number of pool buffers in use now.
func (w *Worker) PoolInUse() int { return w.Pool.Stats().InUse }

// ---- child process ----

const childEnv = "SLUICE_WORKTEST_CHILD"

// RunChild runs a worker and never returns when the process was started by
// StartProcess; call it first in TestMain.
func RunChild() {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return
	}
	// spec: dir,bufferBytes,poolBytes
	parts := strings.Split(spec, ",")
	cfg := Config{Dir: parts[0]}
	if len(parts) > 1 {
		cfg.BufferBytes, _ = strconv.Atoi(parts[1])
	}
	if len(parts) > 2 {
		n, _ := strconv.Atoi(parts[2])
		cfg.PoolBytes = int64(n)
	}
	debug.SetMemoryLimit(server.RuntimeMemoryLimit) // as a worker process does
	w, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worktest child:", err)
		os.Exit(1)
	}
	fmt.Printf("ADDR %s\n", w.Addr)
	select {} // until killed
}

// Process is a worker in a child process.
type Process struct {
	Addr string
	Cmd  *exec.Cmd
}

// StartProcess re-executes the test binary (whose TestMain calls RunChild)
// as a worker on dir and returns once it listens. The test kills it at its
// end if it still runs.
func StartProcess(tb testing.TB, dir string, bufferBytes int, poolBytes int64) *Process {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", childEnv, dir, bufferBytes, poolBytes))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	buf := make([]byte, 256)
	var line string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(line, "\n") && time.Now().Before(deadline) {
		n, err := out.Read(buf)
		line += string(buf[:n])
		if err != nil {
			break
		}
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if !ok {
		tb.Fatalf("worktest: the child worker said %q", line)
	}
	return &Process{Addr: addr, Cmd: cmd}
}

// Kill kills the worker with SIGKILL and waits for it.
func (p *Process) Kill() error {
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = p.Cmd.Wait()
	return nil
}
