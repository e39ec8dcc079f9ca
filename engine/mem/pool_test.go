package mem

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func newPool(t testing.TB, n, size int) *Pool {
	t.Helper()
	p, err := New(Config{BufferBytes: size, Buffers: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func wantStats(t *testing.T, p *Pool, inUse, free, waiters int) {
	t.Helper()
	s := p.Stats()
	if s.InUse != inUse || s.Free != free || s.Waiters != waiters || s.InUse+s.Free != s.Buffers {
		t.Fatalf("stats %+v, want in use %d, free %d, waiters %d", s, inUse, free, waiters)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"zero size", Config{BufferBytes: 0, Buffers: 1}},
		{"zero count", Config{BufferBytes: 4096, Buffers: 0}},
		{"not a multiple of alignment", Config{BufferBytes: 4096 + 512, Buffers: 2, Align: 4096}},
		{"alignment not a power of two", Config{BufferBytes: 4096 * 3, Buffers: 2, Align: 3 * 1024}},
	} {
		if _, err := New(c.cfg); err == nil {
			t.Errorf("%s: New(%+v) succeeded", c.name, c.cfg)
		}
	}
}

func TestBuffersAreAlignedAndDisjoint(t *testing.T) {
	p := newPool(t, 8, 64<<10)
	var got []*Buf
	seen := map[int]bool{}
	for i := 0; i < 8; i++ {
		b := p.TryGet()
		if b == nil {
			t.Fatalf("TryGet %d: nil", i)
		}
		if addr := uintptr(unsafe.Pointer(&b.Bytes()[0])); addr%4096 != 0 {
			t.Fatalf("buffer %d at %#x not page aligned", b.Index(), addr)
		}
		if len(b.Bytes()) != 64<<10 || cap(b.Bytes()) != 64<<10 {
			t.Fatalf("buffer %d has len %d cap %d", b.Index(), len(b.Bytes()), cap(b.Bytes()))
		}
		if seen[b.Index()] {
			t.Fatalf("buffer %d handed out twice", b.Index())
		}
		seen[b.Index()] = true
		b.Bytes()[0] = byte(b.Index())
		got = append(got, b)
	}
	for _, b := range got {
		if b.Bytes()[0] != byte(b.Index()) {
			t.Fatalf("buffers %d overlaps another", b.Index())
		}
	}
	wantStats(t, p, 8, 0, 0)
	if p.TryGet() != nil {
		t.Fatal("TryGet on an exhausted pool returned a buffer")
	}
	for _, b := range got {
		b.Release()
	}
	wantStats(t, p, 0, 8, 0)
}

func TestGetWaitsFIFOAndContext(t *testing.T) {
	p := newPool(t, 1, 4096)
	held := p.TryGet()
	order := make(chan int, 2)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := p.Get(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			b.Release()
		}()
		// Let goroutine i queue before i+1.
		waitFor(t, func() bool { return p.Stats().Waiters == i+1 })
	}
	// TryGet must not overtake queued waiters.
	held.Release()
	wg.Wait()
	if a, b := <-order, <-order; a != 0 || b != 1 {
		t.Fatalf("waiters served in order %d, %d; want 0, 1", a, b)
	}

	held = p.TryGet()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := p.Get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get on exhausted pool with expiring context: %v", err)
	}
	wantStats(t, p, 1, 0, 0)
	held.Release()
}

func TestShareLimit(t *testing.T) {
	p := newPool(t, 4, 4096)
	s := p.NewShare("reads", 2)
	a, b := s.TryGet(), s.TryGet()
	if a == nil || b == nil {
		t.Fatal("share could not take its limit")
	}
	if s.TryGet() != nil {
		t.Fatal("share exceeded its limit")
	}
	if s.InUse() != 2 {
		t.Fatalf("share in use %d", s.InUse())
	}
	// A waiter of the full share must not block the rest of the pool.
	got := make(chan *Buf)
	go func() {
		buf, err := s.Get(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- buf
	}()
	waitFor(t, func() bool { return p.Stats().Waiters == 1 })
	other, err := p.Get(context.Background())
	if err != nil || other == nil {
		t.Fatalf("pool Get blocked behind a share waiter: %v", err)
	}
	other.Release()
	a.Release()
	c := <-got
	if s.InUse() != 2 {
		t.Fatalf("share in use %d after hand-off", s.InUse())
	}
	b.Release()
	c.Release()
	wantStats(t, p, 0, 4, 0)
}

func TestDoubleReleasePanics(t *testing.T) {
	p := newPool(t, 1, 4096)
	b := p.TryGet()
	b.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("second Release did not panic")
		}
	}()
	b.Release()
}

func TestCloseRefusedWhileInUseAndWakesWaiters(t *testing.T) {
	p, err := New(Config{BufferBytes: 4096, Buffers: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := p.TryGet()
	if err := p.Close(); err == nil {
		t.Fatal("Close with a buffer in use succeeded")
	}
	b.Release()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

func TestConcurrentStress(t *testing.T) {
	p := newPool(t, 16, 4096)
	shares := []*Share{nil, p.NewShare("a", 4), p.NewShare("b", 8)}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := shares[g%len(shares)]
			for i := 0; i < 2000; i++ {
				var b *Buf
				var err error
				if s == nil {
					b, err = p.Get(context.Background())
				} else {
					b, err = s.Get(context.Background())
				}
				if err != nil {
					t.Error(err)
					return
				}
				if s != nil && s.InUse() > s.Limit() {
					t.Errorf("share %s over its limit", s.Name())
				}
				b.Bytes()[0]++
				b.Release()
			}
		}()
	}
	wg.Wait()
	wantStats(t, p, 0, 16, 0)
}

func TestNoAllocation(t *testing.T) {
	p := newPool(t, 4, 4096)
	s := p.NewShare("s", 2)
	allocs := testing.AllocsPerRun(1000, func() {
		b := p.TryGet()
		c, _ := s.Get(context.Background())
		b.Release()
		c.Release()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per get/release", allocs)
	}
}

func BenchmarkGetRelease(b *testing.B) {
	p := newPool(b, 64, 4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			buf, err := p.Get(context.Background())
			if err != nil {
				b.Error(err)
				return
			}
			buf.Release()
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
