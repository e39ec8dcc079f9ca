package scheduler

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// TestStarvationBound puts a reader at the far end of a file while another
// streams the 32 MiB before it, always with a piece pending just ahead of
// the sweep. Time is a fake clock that moves 10 ms per completed request,
// so the test is about order, not speed. Without aging the far reader waits
// for the whole stream; with a 50 ms deadline it is read once its wait
// passes the deadline, within one more read.
func TestStarvationBound(t *testing.T) {
	const (
		perRequest = 10 * time.Millisecond
		deadline   = 50 * time.Millisecond
		streamLen  = 32 << 20
	)
	for _, aging := range []bool{true, false} {
		t.Run(fmt.Sprintf("aging=%t", aging), func(t *testing.T) {
			clk := &fakeClock{}
			var gate *gateIO
			// The budget holds the whole stream, and both readers are of
			// one job: neither the budget nor a job's cap may reorder.
			e := newEnv(t, envConfig{backend: diskio.BackendBuffered, bufferBytes: 1 << 20, buffers: 64, wrap: func(io diskio.IO) diskio.IO {
				gate = newGateIO(io)
				gate.onDone = func(*diskio.Request) { clk.Advance(perRequest) }
				return gate
			}})
			f := e.file(streamLen + 4<<20)
			// Ordered by offset: the file's real layout on the disk (ext4
			// may place its second half below its first) is not the point.
			cfg := Config{Depth: 1, Trace: true, CacheBytes: -1, MaxReadBytes: 1 << 20, Deadline: deadline, Now: clk.Now, NoFiemap: true}
			if !aging {
				cfg.Deadline = time.Hour
			}
			s := e.sched(cfg)
			stream := []Extent{{File: f, Offset: 0, Length: streamLen}}
			far := []Extent{{File: f, Offset: streamLen + 2<<20, Length: 4096}}
			resume := pause(s)
			rs, err := s.Register(ReaderConfig{Job: "a", Extents: stream})
			if err != nil {
				t.Fatal(err)
			}
			rf, err := s.Register(ReaderConfig{Job: "a", Extents: far})
			if err != nil {
				t.Fatal(err)
			}
			rs.AddCredit(streamLen) // every piece of the stream is pending at once
			rf.AddCredit(4096)
			resume()
			var wg sync.WaitGroup
			var farDone atomic.Int64 // stream bytes read when the far reader got its data
			wg.Add(2)
			var streamed atomic.Int64
			go func() {
				defer wg.Done()
				for {
					c, err := rs.Next(context.Background())
					if err == io.EOF {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					streamed.Add(int64(len(c.Data)))
					c.Release()
				}
			}()
			go func() {
				defer wg.Done()
				c, err := rf.Next(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				farDone.Store(streamed.Load())
				c.Release()
			}()
			wg.Wait()
			st := s.Stats()
			// The far reader's piece became pending at time 0; the stream's
			// pieces wait for nothing. Reads take one request (1 MiB) each.
			bound := deadline + perRequest
			t.Logf("max wait %v, aged reads %d, stream bytes before the far read %d", st.MaxWait, st.AgedReads, farDone.Load())
			if aging {
				if st.MaxWait > bound {
					t.Errorf("the far reader waited %v, more than the deadline %v plus one read", st.MaxWait, deadline)
				}
				if st.AgedReads == 0 {
					t.Error("no aged read")
				}
			} else if st.MaxWait < 5*deadline {
				t.Errorf("without aging the far reader waited only %v: the test does not starve it", st.MaxWait)
			}
		})
	}
}

// TestCreditRespected grants random credit in random steps and checks, at
// every chunk, that the bytes handed out never exceed the credit granted,
// and that a reader without credit gets nothing and holds no buffer.
func TestCreditRespected(t *testing.T) {
	for _, ra := range []int64{-1, 0} {
		t.Run(fmt.Sprintf("readahead=%t", ra == 0), func(t *testing.T) {
			e := newEnv(t, envConfig{bufferBytes: 64 << 10, buffers: 64})
			s := e.sched(Config{CacheBytes: ra, MaxReadBytes: 256 << 10})
			rng := rand.New(rand.NewPCG(3, 4))
			exts := randomExtents(rng, e, []int64{2 << 20, 1<<20 + 17}, 20)
			starving, err := s.Register(ReaderConfig{Job: "x", Extents: exts[0]})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i, x := range exts[1:] {
				r, err := s.Register(ReaderConfig{Job: "j", Extents: x})
				if err != nil {
					t.Fatal(err)
				}
				seed := rng.Uint64()
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, 1))
					var granted, got int64
					grant := func() {
						n := int64(1 + rng.IntN(20<<10))
						granted += n
						r.AddCredit(n)
					}
					grant()
					for {
						c, err := r.Poll()
						if err == ErrPending {
							if rng.IntN(3) == 0 {
								grant()
							}
							select {
							case <-r.Ready():
							case <-time.After(time.Millisecond):
							}
							continue
						}
						if err == io.EOF {
							return
						}
						if err != nil {
							t.Errorf("reader %d: %v", i, err)
							return
						}
						got += int64(len(c.Data))
						if got > granted {
							t.Errorf("reader %d: %d bytes handed out, %d granted", i, got, granted)
						}
						if err := e.checkChunk(x, &c); err != nil {
							t.Error(err)
						}
						c.Release()
						if rng.IntN(2) == 0 {
							grant()
						}
					}
				}()
			}
			wg.Wait()
			if c, err := starving.Poll(); err != ErrPending {
				t.Errorf("reader without credit: Poll = %v, %v", c, err)
			}
			// Nothing is held for it: with read-ahead off the share is
			// empty; with it on, only the cache holds buffers.
			st := s.Stats()
			if ra < 0 && st.BuffersInUse != 0 {
				t.Errorf("%d buffers in use with only a creditless reader left", st.BuffersInUse)
			}
			if j := starving.job; j.held.Load() != 0 || j.pending != 0 {
				t.Errorf("creditless reader's job holds %d bytes, %d pieces", j.held.Load(), j.pending)
			}
			starving.Cancel()
		})
	}
}

// TestBudgetNeverExceeded runs many greedy readers, whose consumers hold
// chunks for a while, on a share of 12 buffers, and checks the share after
// every step. It also checks the read-ahead cache stays within its budget.
func TestBudgetNeverExceeded(t *testing.T) {
	const limit = 12
	e := newEnv(t, envConfig{bufferBytes: 64 << 10, buffers: 64, share: limit})
	s := e.sched(Config{MaxReadBytes: 256 << 10, CacheBytes: 4 * 64 << 10})
	rng := rand.New(rand.NewPCG(5, 6))
	exts := randomExtents(rng, e, []int64{4 << 20, 3 << 20}, 16)
	var maxSeen atomic.Int64
	check := func() {
		n := int64(e.share.InUse())
		for {
			m := maxSeen.Load()
			if n <= m || maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		if n > limit {
			t.Errorf("share holds %d buffers, limit %d", n, limit)
		}
		if st := e.pool.Stats(); st.InUse > limit {
			t.Errorf("pool has %d buffers out, the share's limit is %d", st.InUse, limit)
		}
	}
	var wg sync.WaitGroup
	for i, x := range exts {
		r, err := s.Register(ReaderConfig{Job: fmt.Sprint(i % 2), Extents: x})
		if err != nil {
			t.Fatal(err)
		}
		// The consumer hands chunks to a writer that releases each one a
		// little later, as the network server does after writev.
		sent := make(chan Chunk, 4)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for c := range sent {
				time.Sleep(50 * time.Microsecond)
				check()
				c.Release()
			}
		}()
		go func() {
			defer wg.Done()
			defer close(sent)
			r.AddCredit(1 << 30)
			for {
				check()
				c, err := r.Next(context.Background())
				check()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if err := e.checkChunk(x, &c); err != nil {
					t.Error(err)
				}
				sent <- c
			}
		}()
	}
	wg.Wait()
	check()
	t.Logf("at most %d of %d buffers in use", maxSeen.Load(), limit)
}

// TestJobsShareTheBudget: job A's consumers take nothing out (their chunks
// stay queued, holding buffers); job B, arriving later, is still served at
// once, and A never holds much more than its part.
func TestJobsShareTheBudget(t *testing.T) {
	const limit = 32
	e := newEnv(t, envConfig{bufferBytes: 64 << 10, buffers: limit})
	s := e.sched(Config{MaxReadBytes: 128 << 10, CacheBytes: -1})
	f := e.file(8 << 20)
	var hogs []*Reader
	for i := range 8 {
		r, err := s.Register(ReaderConfig{Job: "A", Extents: []Extent{{File: f, Offset: int64(i) << 20, Length: 1 << 20}}})
		if err != nil {
			t.Fatal(err)
		}
		r.AddCredit(1 << 20)
		hogs = append(hogs, r)
	}
	capA := int64(limit) * 64 << 10 / 4 * 3
	waitFor(t, "job A to reach its cap", func() bool { return hogs[0].job.held.Load() >= capA })
	bx := []Extent{{File: f, Offset: 100, Length: 300 << 10}}
	rb, err := s.Register(ReaderConfig{Job: "B", Extents: bx})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.drain(ctx, rb, bx, 64<<10); err != nil {
		t.Fatalf("job B while A hogs: %v", err)
	}
	if held := hogs[0].job.held.Load(); held > capA+128<<10 {
		t.Errorf("job A holds %d bytes, cap %d plus one read", held, capA)
	}
	for _, r := range hogs {
		r.Cancel()
	}
	// Reads still in flight for the hogs give their buffers back as they
	// complete.
	waitFor(t, "every buffer back after cancelling the hogs", func() bool { return e.share.InUse() == 0 })
}
