package scheduler

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/uring"
)

// env is a disk for tests: an IO on a temporary directory, a pool and a
// read share.
type env struct {
	t     testing.TB
	dir   string
	io    diskio.IO
	pool  *mem.Pool
	share *mem.Share
	files []*diskio.File
}

type envConfig struct {
	backend     string
	bufferBytes int
	buffers     int // pool size
	share       int // share limit; 0 means the whole pool
	dir         string
	wrap        func(diskio.IO) diskio.IO
}

func newEnv(t testing.TB, c envConfig) *env {
	t.Helper()
	if c.backend == "" {
		c.backend = diskio.BackendPool
	}
	if c.backend == diskio.BackendURing {
		if err := uring.Probe(); err != nil {
			t.Skipf("io_uring unusable: %v", err)
		}
	}
	if c.bufferBytes == 0 {
		c.bufferBytes = 64 << 10
	}
	if c.buffers == 0 {
		c.buffers = 64
	}
	if c.share == 0 {
		c.share = c.buffers
	}
	if c.dir == "" {
		c.dir = t.TempDir()
	}
	dio, err := diskio.New(diskio.Config{Backend: c.backend, Dir: c.dir, Depth: 64})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := mem.New(mem.Config{BufferBytes: c.bufferBytes, Buffers: c.buffers})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: c.dir, io: dio, pool: pool, share: pool.NewShare("read", c.share)}
	if c.wrap != nil {
		e.io = c.wrap(dio)
	}
	t.Cleanup(func() {
		for _, f := range e.files {
			if err := f.Close(); err != nil {
				t.Error(err)
			}
		}
		if err := e.io.Close(); err != nil {
			t.Error(err)
		}
		if st := pool.Stats(); st.InUse != 0 {
			t.Errorf("pool has %d buffers in use at the end", st.InUse)
		}
		if err := pool.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

// patternByte is the content of test file id at offset off.
func patternByte(id int, off int64) byte {
	x := uint64(off/8)*0x9e3779b97f4a7c15 ^ uint64(id+1)*0xbf58476d1ce4e5b9
	x ^= x >> 29
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], x)
	return b[off%8]
}

// file writes a pattern file of size bytes and opens it through the IO.
func (e *env) file(size int64) *diskio.File {
	e.t.Helper()
	id := len(e.files)
	b := make([]byte, size)
	for i := range b {
		b[i] = patternByte(id, int64(i))
	}
	return e.fileBytes(b)
}

func (e *env) fileBytes(b []byte) *diskio.File {
	e.t.Helper()
	path := filepath.Join(e.dir, fmt.Sprintf("f%03d", len(e.files)))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	f, err := e.io.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	e.files = append(e.files, f)
	return f
}

func (e *env) fileID(f *diskio.File) int {
	for i, g := range e.files {
		if g == f {
			return i
		}
	}
	panic("unknown file")
}

func (e *env) sched(cfg Config) *Scheduler {
	e.t.Helper()
	cfg.IO = e.io
	cfg.Buffers = e.share
	s, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

// checkChunk compares a chunk with the pattern its extent should hold.
func (e *env) checkChunk(exts []Extent, c *Chunk) error {
	ext := exts[c.Extent]
	id := e.fileID(ext.File)
	base := ext.Offset + c.Offset
	for i, b := range c.Data {
		if want := patternByte(id, base+int64(i)); b != want {
			return fmt.Errorf("extent %d offset %d: byte %#x, want %#x", c.Extent, c.Offset+int64(i), b, want)
		}
	}
	return nil
}

// drain reads r to the end, granting credit in steps of grant bytes as
// chunks are released, and checks every byte and the order. It returns the
// number of bytes read.
func (e *env) drain(ctx context.Context, r *Reader, exts []Extent, grant int64) (int64, error) {
	var total, want int64
	for _, x := range exts {
		want += x.Length
	}
	nextExt, nextOff := 0, int64(0)
	for nextExt < len(exts) && exts[nextExt].Length == 0 {
		nextExt++
	}
	r.AddCredit(grant)
	for {
		c, err := r.Next(ctx)
		if err == io.EOF {
			if total != want {
				return total, fmt.Errorf("EOF after %d of %d bytes", total, want)
			}
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if c.Extent != nextExt || c.Offset != nextOff {
			c.Release()
			return total, fmt.Errorf("chunk at extent %d offset %d, want extent %d offset %d", c.Extent, c.Offset, nextExt, nextOff)
		}
		if err := e.checkChunk(exts, &c); err != nil {
			c.Release()
			return total, err
		}
		n := int64(len(c.Data))
		total += n
		nextOff += n
		if nextOff == exts[nextExt].Length {
			if !c.Last {
				return total, errors.New("extent's last chunk not marked Last")
			}
			nextExt++
			nextOff = 0
			for nextExt < len(exts) && exts[nextExt].Length == 0 {
				nextExt++
			}
		}
		c.Release()
		r.AddCredit(n)
	}
}

// pause stops the scheduler from issuing reads until the returned function
// is called, so that a test can queue pieces first.
func pause(s *Scheduler) (resume func()) {
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.paused = false
		s.mu.Unlock()
		s.wakeup()
	}
}

// gateIO holds completions of the requests it passes on until released,
// and records the order of requests.
type gateIO struct {
	diskio.IO
	mu      sync.Mutex
	held    []*diskio.Request
	holding bool
	reqs    []recorded
	done    chan *diskio.Request
	orig    map[*diskio.Request]chan<- *diskio.Request
	onDone  func(*diskio.Request)
}

type recorded struct {
	file *diskio.File
	off  int64
	n    int
}

func newGateIO(inner diskio.IO) *gateIO {
	g := &gateIO{IO: inner, done: make(chan *diskio.Request, 1024), orig: map[*diskio.Request]chan<- *diskio.Request{}}
	go g.forward()
	return g
}

func (g *gateIO) Submit(reqs ...*diskio.Request) error {
	g.mu.Lock()
	for _, r := range reqs {
		g.reqs = append(g.reqs, recorded{r.File, r.Off, len(r.Buf)})
		g.orig[r] = r.Done
		r.Done = g.done
	}
	g.mu.Unlock()
	return g.IO.Submit(reqs...)
}

func (g *gateIO) forward() {
	for r := range g.done {
		g.mu.Lock()
		r.Done = g.orig[r]
		delete(g.orig, r)
		if g.holding {
			g.held = append(g.held, r)
			g.mu.Unlock()
			continue
		}
		g.mu.Unlock()
		if g.onDone != nil {
			g.onDone(r)
		}
		r.Done <- r
	}
}

func (g *gateIO) hold() {
	g.mu.Lock()
	g.holding = true
	g.mu.Unlock()
}

func (g *gateIO) release() {
	g.mu.Lock()
	held := g.held
	g.held, g.holding = nil, false
	g.mu.Unlock()
	for _, r := range held {
		if g.onDone != nil {
			g.onDone(r)
		}
		r.Done <- r
	}
}

func (g *gateIO) heldCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}

func (g *gateIO) Close() error {
	err := g.IO.Close()
	close(g.done)
	return err
}

// fakeClock is a clock that moves only when told.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
