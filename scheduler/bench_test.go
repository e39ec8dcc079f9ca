package scheduler

import (
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// BenchmarkSteadyState measures the scheduler's own path in a steady state:
// 32 readers whose extents (16 KiB each) interleave through a file, so
// every read merges the next extents of all of them; one goroutine plays
// the network server (Notify, Poll, Release, AddCredit). An op is one chunk
// handed out; allocs/op is the figure to watch (0 is the bar, with and
// without read-ahead).
func BenchmarkSteadyState(b *testing.B) {
	for _, backend := range []string{diskio.BackendURing, diskio.BackendPool} {
		for _, ra := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/readahead=%t", backend, ra), func(b *testing.B) {
				benchSteadyState(b, backend, ra)
			})
		}
	}
}

func benchSteadyState(b *testing.B, backend string, readAhead bool) {
	const (
		readers  = 32
		extent   = 16 << 10
		fileSize = 16 << 20
		warmup   = readers * 8
	)
	e := newEnv(b, envConfig{backend: backend, bufferBytes: 256 << 10, buffers: 256})
	f := e.file(fileSize)
	cfg := Config{MaxReadBytes: 1 << 20}
	if !readAhead {
		cfg.CacheBytes = -1
	}
	s := e.sched(cfg)
	perReader := (b.N+warmup)/readers + 1
	type br struct {
		r      *Reader
		queued atomic.Bool
		done   bool
	}
	ready := make(chan *br, readers)
	var rs []*br
	for i := range readers {
		exts := make([]Extent, perReader)
		for k := range exts {
			off := (int64(k*readers+i) * extent) % fileSize
			exts[k] = Extent{File: f, Offset: off, Length: extent}
		}
		x := &br{}
		r, err := s.Register(ReaderConfig{Extents: exts, Notify: func() {
			if !x.queued.Swap(true) {
				ready <- x
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		x.r = r
		rs = append(rs, x)
	}
	for _, x := range rs {
		x.r.AddCredit(4 * extent)
	}
	chunks, ended := 0, 0
	b.SetBytes(extent)
	b.ReportAllocs()
	for chunks < b.N+warmup && ended < readers {
		x := <-ready
		x.queued.Store(false)
		for !x.done {
			c, err := x.r.Poll()
			if err == ErrPending {
				break
			}
			if err == io.EOF {
				x.done = true
				ended++
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n := int64(len(c.Data))
			c.Release()
			x.r.AddCredit(n)
			if c.Last {
				chunks++
				if chunks == warmup {
					b.ResetTimer()
				}
			}
		}
	}
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(st.Pieces)/float64(max(st.Reads, 1)), "pieces/read")
	for _, x := range rs {
		x.r.Cancel()
	}
}
