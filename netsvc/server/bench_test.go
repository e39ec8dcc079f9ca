package server_test

import (
	"runtime"
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

// The server's data paths over real TCP on loopback, with an in-process
// worker and the Go transport as the client: MapPartition buffers written
// (WRITE_DATA read into pool buffers and handed to the engine) and read
// back (scheduler chunks sent with writev under credit). Allocations are
// counted for the whole process, client included, and divided by the
// buffers moved: what a channel's open, regions and commit cost is spread
// over them, so a path that allocates per buffer shows at least 1.
//
//	go test ./netsvc/server -run '^$' -bench DataPath -benchmem

const (
	benchBuffer  = 64 << 10 // stored buffer: header and payload
	benchSubs    = 64
	benchPerPart = 4096 // buffers per MapPartition written (256 MiB)
)

// benchFrame is a WRITE_DATA frame of a benchBuffer-byte stored buffer:
// one record, whose length prefix takes 3 bytes.
func benchFrame(sub uint32) []byte {
	f := bufferFrame(sub, testData(benchBuffer-wire.BufferHeaderSize-3, sub))
	if len(f) != wire.HeaderSize+benchBuffer {
		panic("benchFrame: wrong size")
	}
	return f
}

// writeBenchMap writes one MapPartition of n buffers spread over the
// subpartitions, in regions of 4 buffers of each subpartition, through
// frames (one per subpartition, reused: the transport writes the header in
// place).
func writeBenchMap(tb testing.TB, c *transport.Conn, mapIndex uint32, n int, frames [][]byte) {
	ctx := ctxT(tb)
	w, err := transport.OpenWrite(ctx, c, &wire.WriteOpen{Map: mapIndex, Subpartitions: benchSubs, Codec: wire.CodecNone,
		MaxBufferBytes: benchBuffer, Job: []byte("bench"), Dataset: []byte("ds")})
	if err != nil {
		tb.Fatal(err)
	}
	var totals wire.WriteTotals
	const perRegion = benchSubs * 4
	for i, region := 0, uint32(0); i < n; region++ {
		if err := w.StartRegion(wire.RegionStart{Region: region}); err != nil {
			tb.Fatal(err)
		}
		rf := wire.RegionFinish{Region: region}
		for k := 0; k < perRegion && i < n; k, i = k+1, i+1 {
			f := frames[k/(perRegion/benchSubs)] // ascending subpartitions
			stored := f[wire.HeaderSize:]
			totals.Add(stored, len(stored))
			rf.Buffers++
			rf.StoredBytes += uint64(len(stored))
			if err := w.Write(ctx, f); err != nil {
				tb.Fatal(err)
			}
		}
		if err := w.FinishRegion(rf); err != nil {
			tb.Fatal(err)
		}
		totals.Regions++
	}
	if _, err := w.Finish(ctx, totals); err != nil {
		tb.Fatal(err)
	}
}

func benchFrames() [][]byte {
	frames := make([][]byte, benchSubs)
	for s := range frames {
		frames[s] = benchFrame(uint32(s))
	}
	return frames
}

func benchWorker(tb testing.TB) *worktest.Worker {
	return worktest.Start(tb, worktest.Config{BufferBytes: 1 << 20, PoolBytes: 256 << 20})
}

// BenchmarkDataPathWrite: b.N buffers written into MapPartitions of
// benchPerPart buffers each, committed.
func BenchmarkDataPathWrite(b *testing.B) {
	w := benchWorker(b)
	c := dial(b, w.Addr)
	frames := benchFrames()
	writeBenchMap(b, c, 0, benchSubs, frames) // warm up
	b.SetBytes(benchBuffer)
	b.ReportAllocs()
	b.ResetTimer()
	for m, left := uint32(1), b.N; left > 0; m++ {
		n := min(left, benchPerPart)
		writeBenchMap(b, c, m, n, frames)
		left -= n
	}
}

// BenchmarkDataPathRead: b.N buffers read from a committed MapPartition,
// every subpartition of it per channel, channels opened one after the
// other.
func BenchmarkDataPathRead(b *testing.B) {
	w := benchWorker(b)
	c := dial(b, w.Addr)
	writeBenchMap(b, c, 0, benchPerPart, benchFrames())
	b.SetBytes(benchBuffer)
	b.ReportAllocs()
	b.ResetTimer()
	for left := b.N; left > 0; {
		left -= readBenchMap(b, c, left)
	}
	// Frames carry several buffers: the last pass may read a few more than
	// b.N, which only lowers the figures.
}

// readBenchMap reads the whole partition written by writeBenchMap (or stops
// once it has read max buffers) and returns the buffers read.
func readBenchMap(tb testing.TB, c *transport.Conn, max int) int {
	ctx := ctxT(tb)
	r, err := transport.OpenRead(ctx, c, wire.ReadOpen{Kind: wire.PartitionMap, Index: 0, SubStart: 0, SubEnd: benchSubs,
		Job: []byte("bench"), Dataset: []byte("ds")}, 4<<20, nil)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for n < max {
		f, err := r.Next(ctx)
		if err != nil {
			if n == benchPerPart {
				break // io.EOF after the whole partition
			}
			tb.Fatalf("after %d buffers: %v", n, err)
		}
		// A READ_DATA frame carries whole stored buffers.
		if len(f.Stored) == 0 || len(f.Stored)%benchBuffer != 0 {
			tb.Fatalf("after %d buffers: a frame of %d bytes, not of whole %d-byte buffers", n, len(f.Stored), benchBuffer)
		}
		n += len(f.Stored) / benchBuffer
		r.Release(f)
	}
	if n < benchPerPart {
		if err := r.Close(ctx, wire.CodeOK, "done"); err != nil {
			tb.Fatal(err)
		}
	}
	return n
}

// TestDataPathAllocations: moving a buffer through the server allocates
// nothing; what remains is a channel's fixed cost, spread over the
// buffers (write: open, 16 regions, commit; read: open and end), about
// 0.04 and 0.02 per buffer. The bar, 0.1, fails for anything allocated
// once every ten buffers or more often (it failed at 0.2 and 0.26 before
// the read loops decoded CREDIT into scratch messages and the read-ahead
// cache left ristretto).
func TestDataPathAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 512 MiB")
	}
	w := benchWorker(t)
	c := dial(t, w.Addr)
	frames := benchFrames()
	writeBenchMap(t, c, 0, benchPerPart, frames) // warm up, and the partition read below
	readBenchMap(t, c, benchPerPart)
	for _, tc := range []struct {
		name string
		run  func()
	}{
		{"write", func() { writeBenchMap(t, c, 1, benchPerPart, frames) }},
		{"read", func() { readBenchMap(t, c, benchPerPart) }},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tc.run()
		runtime.ReadMemStats(&after)
		perBuffer := float64(after.Mallocs-before.Mallocs) / benchPerPart
		t.Logf("%s: %d allocations for %d buffers (%.3f per buffer)", tc.name, after.Mallocs-before.Mallocs, benchPerPart, perBuffer)
		if perBuffer >= 0.1 {
			t.Errorf("%s path: %.3f allocations per buffer; a buffer must move without allocating", tc.name, perBuffer)
		}
	}
}
