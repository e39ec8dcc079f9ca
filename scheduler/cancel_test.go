package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// TestCancelReleasesBuffers cancels readers in three states: with reads in
// flight, with chunks queued but not taken, and sharing a read buffer with
// a reader that goes on. Every buffer comes back.
func TestCancelReleasesBuffers(t *testing.T) {
	t.Run("in flight", func(t *testing.T) {
		var gate *gateIO
		e := newEnv(t, envConfig{wrap: func(io diskio.IO) diskio.IO { gate = newGateIO(io); return gate }})
		f := e.file(2 << 20)
		s := e.sched(Config{CacheBytes: -1})
		gate.hold()
		var rs []*Reader
		for i := range 8 {
			r, err := s.Register(ReaderConfig{Extents: []Extent{{File: f, Offset: int64(i) << 18, Length: 1 << 18}}})
			if err != nil {
				t.Fatal(err)
			}
			r.AddCredit(1 << 18)
			rs = append(rs, r)
		}
		waitFor(t, "reads in flight", func() bool { return gate.heldCount() > 0 })
		for _, r := range rs {
			r.Cancel()
			if _, err := r.Poll(); !errors.Is(err, ErrCanceled) {
				t.Errorf("Poll after Cancel: %v", err)
			}
		}
		if n := e.share.InUse(); n == 0 {
			t.Error("no buffer in use while reads are in flight")
		}
		gate.release()
		waitFor(t, "buffers back after the reads completed", func() bool { return e.share.InUse() == 0 })
	})
	t.Run("queued", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		f := e.file(1 << 20)
		s := e.sched(Config{CacheBytes: -1})
		r, err := s.Register(ReaderConfig{Extents: []Extent{{File: f, Offset: 0, Length: 1 << 20}}})
		if err != nil {
			t.Fatal(err)
		}
		r.AddCredit(1 << 20)
		waitFor(t, "everything read", func() bool {
			st := s.Stats()
			return st.DeliveredBytes == 1<<20 && st.InFlight == 0
		})
		if e.share.InUse() == 0 {
			t.Fatal("no buffer holds the queued chunks")
		}
		r.Cancel()
		if n := e.share.InUse(); n != 0 {
			t.Errorf("%d buffers in use right after Cancel", n)
		}
	})
	t.Run("shared buffer", func(t *testing.T) {
		e := newEnv(t, envConfig{backend: diskio.BackendBuffered})
		f := e.file(1 << 20)
		s := e.sched(Config{CacheBytes: -1, Trace: true})
		resume := pause(s)
		x0 := []Extent{{File: f, Offset: 0, Length: 4000}}
		x1 := []Extent{{File: f, Offset: 4000, Length: 4000}}
		r0, _ := s.Register(ReaderConfig{Extents: x0})
		r1, _ := s.Register(ReaderConfig{Extents: x1})
		r0.AddCredit(4000)
		r1.AddCredit(4000)
		resume()
		c, err := r0.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if tr := s.Trace(); len(tr) != 1 || tr[0].Pieces != 2 {
			t.Fatalf("trace %+v: want one read serving both", tr)
		}
		r1.Cancel()
		if n := e.share.InUse(); n != 1 {
			t.Errorf("%d buffers in use, want the one r0's chunk holds", n)
		}
		if err := e.checkChunk(x0, &c); err != nil {
			t.Error(err)
		}
		c.Release()
		if n := e.share.InUse(); n != 0 {
			t.Errorf("%d buffers in use after the last chunk's release", n)
		}
		if _, err := r0.Poll(); err != io.EOF {
			t.Errorf("r0 after its only chunk: %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		f := e.file(1 << 20)
		s := e.sched(Config{})
		r, _ := s.Register(ReaderConfig{Extents: []Extent{{File: f, Offset: 0, Length: 1 << 20}}})
		r.AddCredit(1 << 20)
		c, err := r.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Poll(); !errors.Is(err, ErrClosed) {
			t.Errorf("Poll after Close: %v", err)
		}
		if _, err := s.Register(ReaderConfig{}); !errors.Is(err, ErrClosed) {
			t.Errorf("Register after Close: %v", err)
		}
		if n := e.share.InUse(); n != 1 {
			t.Errorf("%d buffers in use after Close, want the chunk still held", n)
		}
		c.Release()
	})
}

// TestStress runs many readers with random credit, random consumers and
// random cancellation under both policies, with and without read-ahead, two
// jobs and a small budget. Every reader that is not cancelled gets exactly
// its bytes, in order; at the end every buffer is back in the pool.
func TestStress(t *testing.T) {
	for _, c := range []struct {
		pol Policy
		ra  int64
	}{{Elevator, 0}, {Elevator, -1}, {FIFO, -1}} {
		t.Run(fmt.Sprintf("%v/readahead=%t", c.pol, c.ra == 0), func(t *testing.T) {
			e := newEnv(t, envConfig{bufferBytes: 16 << 10, buffers: 96, share: 48})
			s := e.sched(Config{Policy: c.pol, CacheBytes: c.ra, MaxReadBytes: 64 << 10, Deadline: 5 * time.Millisecond, Depth: 3})
			rng := rand.New(rand.NewPCG(11, uint64(c.pol)))
			exts := randomExtents(rng, e, []int64{1 << 20, 700 << 10, 300<<10 + 1}, 150)
			var wg sync.WaitGroup
			for i, x := range exts {
				seed := rng.Uint64()
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, 2))
					r, err := s.Register(ReaderConfig{Job: fmt.Sprint(i % 2), Extents: x})
					if err != nil {
						t.Error(err)
						return
					}
					cancelAt := int64(-1)
					if rng.IntN(4) == 0 {
						cancelAt = rng.Int64N(64 << 10)
					}
					var got int64
					r.AddCredit(int64(1 + rng.IntN(32<<10)))
					for {
						if cancelAt >= 0 && got >= cancelAt {
							r.Cancel()
							if _, err := r.Poll(); !errors.Is(err, ErrCanceled) && err != io.EOF {
								t.Errorf("reader %d after Cancel: %v", i, err)
							}
							return
						}
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						ch, err := r.Next(ctx)
						cancel()
						if err == io.EOF {
							var want int64
							for _, y := range x {
								want += y.Length
							}
							if got != want {
								t.Errorf("reader %d: EOF after %d of %d bytes", i, got, want)
							}
							return
						}
						if err != nil {
							t.Errorf("reader %d: %v", i, err)
							return
						}
						if err := e.checkChunk(x, &ch); err != nil {
							t.Errorf("reader %d: %v", i, err)
						}
						got += int64(len(ch.Data))
						if rng.IntN(8) == 0 {
							time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
						}
						ch.Release()
						r.AddCredit(int64(len(ch.Data)) + int64(rng.IntN(2))*int64(rng.IntN(16<<10)))
					}
				}()
			}
			wg.Wait()
			st := s.Stats()
			if st.Readers != 0 || st.Pending != 0 {
				t.Errorf("leftovers: %+v", st)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if n := e.share.InUse(); n != 0 {
				t.Errorf("%d buffers in use after Close", n)
			}
			t.Logf("%+v", st)
		})
	}
}

// TestReadErrors: reads of one file fail with EIO; its readers end with an
// error naming the extent and wrapping EIO, readers of another file go on,
// and every buffer comes back.
func TestReadErrors(t *testing.T) {
	e := newEnv(t, envConfig{wrap: func(inner diskio.IO) diskio.IO {
		f := diskio.NewFaulty(inner)
		f.Inject(diskio.Rule{Op: diskio.OpRead, Path: "f001", Err: syscall.EIO})
		return f
	}})
	good, bad := e.file(1<<20), e.file(1<<20)
	s := e.sched(Config{})
	xg := []Extent{{File: good, Offset: 0, Length: 1 << 20}}
	xb := []Extent{{File: bad, Offset: 4096, Length: 100000}}
	rg, _ := s.Register(ReaderConfig{Extents: xg})
	rb, _ := s.Register(ReaderConfig{Extents: xb})
	rb.AddCredit(1 << 20)
	_, err := rb.Next(context.Background())
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "extent 0") {
		t.Fatalf("reader of the failing file: %v", err)
	}
	if _, again := rb.Poll(); !errors.Is(again, syscall.EIO) {
		t.Errorf("Poll after the failure: %v", again)
	}
	if _, err := e.drain(context.Background(), rg, xg, 64<<10); err != nil {
		t.Fatalf("reader of the good file: %v", err)
	}
	waitFor(t, "buffers back", func() bool { return s.Stats().InFlight == 0 && e.share.InUse() <= s.cacheBuffers() })
}

// cacheBuffers is how many buffers the read-ahead cache holds.
func (s *Scheduler) cacheBuffers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache == nil {
		return 0
	}
	return s.cache.n
}
