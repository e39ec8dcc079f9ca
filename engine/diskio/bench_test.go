package diskio

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/uring"
)

// BenchmarkSeam measures the seam itself: sequential O_DIRECT writes and
// reads of one block per op with depth requests in flight, on each backend.
// The figure to watch is allocs/op (0 is the bar); the bandwidth depends on
// the disk and is compared with fio by `sluice bench disk --fio` instead.
func BenchmarkSeam(b *testing.B) {
	for _, backend := range []string{BackendURing, BackendPool} {
		for _, op := range []Op{OpWrite, OpRead} {
			for _, block := range []int{64 << 10, 1 << 20} {
				b.Run(fmt.Sprintf("%s/%s/block=%d", backend, op, block), func(b *testing.B) {
					benchSeam(b, backend, op, block, 16)
				})
			}
		}
	}
}

func benchSeam(b *testing.B, backend string, op Op, block, depth int) {
	if backend == BackendURing {
		if err := uring.Probe(); err != nil {
			b.Skipf("io_uring unusable: %v", err)
		}
	}
	dir := b.TempDir()
	io, err := New(Config{Backend: backend, Depth: depth, Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := io.Close(); err != nil {
			b.Error(err)
		}
	}()
	pool, err := mem.New(mem.Config{BufferBytes: block, Buffers: depth})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := pool.Close(); err != nil {
			b.Error(err)
		}
	}()
	if _, err := io.RegisterMemory(pool.Memory(), block); err != nil {
		b.Fatal(err)
	}
	f, err := io.OpenFile(filepath.Join(dir, "bench.data"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}()
	// A file of 256 blocks, preallocated and written once so reads hit data;
	// ops cycle over it.
	const fileBlocks = 256
	if err := f.Preallocate(0, fileBlocks*int64(block)); err != nil {
		b.Fatal(err)
	}
	bufs := make([]*mem.Buf, depth)
	for i := range bufs {
		bufs[i] = pool.TryGet()
	}
	defer func() {
		for _, buf := range bufs {
			buf.Release()
		}
	}()
	for i := 0; i < fileBlocks; i++ {
		if err := Do(io, &Request{Op: OpWrite, File: f, Buf: bufs[0].Bytes(), Off: int64(i * block)}); err != nil {
			b.Fatal(err)
		}
	}
	done := make(chan *Request, depth)
	reqs := make([]Request, depth)
	next := 0
	one := make([]*Request, 1) // a kept slice: Submit(r) would allocate one per call
	submit := func(r *Request) {
		r.Off = int64(next%fileBlocks) * int64(block)
		next++
		one[0] = r
		if err := io.Submit(one...); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(block))
	b.ReportAllocs()
	b.ResetTimer()
	inflight := 0
	for i := range reqs {
		if i >= b.N {
			break
		}
		reqs[i] = Request{Op: op, File: f, Buf: bufs[i].Bytes(), Done: done}
		submit(&reqs[i])
		inflight++
	}
	for completed := 0; completed < b.N; completed++ {
		r := <-done
		inflight--
		if r.Err != nil || r.N != block {
			b.Fatalf("%s: n %d err %v", op, r.N, r.Err)
		}
		if next < b.N {
			submit(r)
			inflight++
		}
	}
}
