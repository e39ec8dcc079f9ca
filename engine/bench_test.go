package engine

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/sluice-shuffle/sluice/layout"
)

// The write path allocates nothing per buffer: reservation, verification,
// the builder's bookkeeping, the aligned write, its completion. (Creating
// and committing a partition allocates; that is per partition.)
func TestNoAllocationPerBuffer(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		cfg := testConfig(backend, t.TempDir())
		s := openTestStore(t, cfg)
		ctx := context.Background()
		w, err := s.CreateMap(ctx, MapSpec{Job: "a", Dataset: "d", Subpartitions: 1 << 20, SizeHint: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.StartRegion(false); err != nil {
			t.Fatal(err)
		}
		buf := storedBuffer(0, payload(20000, 1))
		sub := uint32(0)
		one := func() {
			layout.PutBufferHeader(buf, &layout.BufferHeader{Subpartition: sub, PayloadLength: 20000, UncompressedLength: 20000, PayloadCRC: layout.Checksum(buf[24:])})
			sub++
			if err := reserveWrite(ctx, w, buf); err != nil {
				t.Fatal(err)
			}
		}
		for range 2000 { // warm up: slices reach their size, the file its preallocation
			one()
		}
		if n := testing.AllocsPerRun(2000, one); n != 0 {
			t.Fatalf("%v allocations per buffer on the map write path", n)
		}

		rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "a", Dataset: "r", MapCount: 4})
		if err != nil {
			t.Fatal(err)
		}
		seq := uint32(0)
		seg := segmentBytes(0, 0, 0, payload(20000, 2))
		push := func() {
			layout.PutSegmentHeader(seg, &layout.SegmentHeader{Seq: seq, PayloadLength: 20000, UncompressedLength: 20000, PayloadCRC: layout.Checksum(seg[32:])})
			seq++
			if _, err := pushReserve(ctx, rp, seg); err != nil {
				t.Fatal(err)
			}
		}
		for range 2000 {
			push()
		}
		if n := testing.AllocsPerRun(2000, push); n != 0 {
			t.Fatalf("%v allocations per segment on the reduce push path", n)
		}
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkMapWrite stores 64 KiB buffers through Reserve/Commit into one
// MapPartition after another (256 MiB each, committed): the engine's
// per-buffer cost, with the disk below it.
func BenchmarkMapWrite(b *testing.B) {
	for _, backend := range testBackends {
		b.Run(backend, func(b *testing.B) {
			cfg := testConfig(backend, b.TempDir())
			cfg.BufferBytes, cfg.PoolBytes = 1<<20, 128<<20
			s := openTestStore(b, cfg)
			ctx := context.Background()
			const payloadBytes = 64<<10 - layout.BufferHeaderSize
			buf := storedBuffer(0, payload(payloadBytes, 1))
			const perPartition = 4096
			var w *MapWriter
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%perPartition == 0 {
					if w != nil {
						if _, err := w.Finish(ctx); err != nil {
							b.Fatal(err)
						}
					}
					var err error
					w, err = s.CreateMap(ctx, MapSpec{Job: "b", Dataset: "d", Map: uint32(i / perPartition), Subpartitions: 1000,
						SizeHint: perPartition * int64(len(buf))})
					if err != nil {
						b.Fatal(err)
					}
					if err := w.StartRegion(true); err != nil {
						b.Fatal(err)
					}
					layout.PutBufferHeader(buf, &layout.BufferHeader{Subpartition: layout.AllSubpartitions, PayloadLength: payloadBytes,
						UncompressedLength: payloadBytes, PayloadCRC: layout.Checksum(buf[layout.BufferHeaderSize:])})
				}
				if err := reserveWrite(ctx, w, buf); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := w.Finish(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkReducePush pushes 16 KiB segments round-robin into 64
// ReducePartitions (their merge buffers), finalized at the end.
func BenchmarkReducePush(b *testing.B) {
	for _, backend := range testBackends {
		b.Run(backend, func(b *testing.B) {
			cfg := testConfig(backend, b.TempDir())
			cfg.BufferBytes, cfg.PoolBytes = 1<<20, 256<<20
			s := openTestStore(b, cfg)
			ctx := context.Background()
			const reduces = 64
			rps := make([]*ReducePartition, reduces)
			for r := range rps {
				var err error
				if rps[r], err = s.OpenReduce(ctx, ReduceSpec{Job: "b", Dataset: "r", Reduce: uint32(r), MapCount: 1}); err != nil {
					b.Fatal(err)
				}
			}
			seg := segmentBytes(0, 0, 0, payload(16<<10, 3))
			seqs := make([]uint32, reduces)
			b.SetBytes(int64(len(seg)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := i % reduces
				layout.PutSegmentHeader(seg, &layout.SegmentHeader{Seq: seqs[r], PayloadLength: 16 << 10, UncompressedLength: 16 << 10,
					PayloadCRC: layout.Checksum(seg[layout.SegmentHeaderSize:])})
				seqs[r]++
				if _, err := pushReserve(ctx, rps[r], seg); err != nil {
					b.Fatal(err)
				}
			}
			for r, rp := range rps {
				if err := rp.Commit(ctx, 0, 0, seqs[r]); err != nil {
					b.Fatal(err)
				}
				if _, err := rp.Finalize(ctx); err != nil {
					b.Fatal(fmt.Errorf("finalize %d: %w", r, err))
				}
			}
		})
	}
}

// BenchmarkSortedCommits orders the 1,000 producer commits of one
// ReducePartition by map at finalize, as they arrive from concurrent
// producers (in about map order, 64 at a time): by sorting, and by placing
// each at its map's index (what sortedCommitsLocked does).
func BenchmarkSortedCommits(b *testing.B) {
	const maps = 1000
	arrived := make([]layout.AttemptCommit, maps)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range arrived {
		arrived[i] = layout.AttemptCommit{Map: uint32(i), Segments: 1, Bytes: 4 << 10}
	}
	for i := 0; i < maps; i += 64 {
		chunk := arrived[i:min(i+64, maps)]
		rng.Shuffle(len(chunk), func(a, b int) { chunk[a], chunk[b] = chunk[b], chunk[a] })
	}
	work := make([]layout.AttemptCommit, maps)
	b.Run("sort", func(b *testing.B) {
		for b.Loop() {
			copy(work, arrived)
			slices.SortFunc(work, func(a, b layout.AttemptCommit) int { return cmp.Compare(a.Map, b.Map) })
		}
	})
	b.Run("place", func(b *testing.B) {
		for b.Loop() {
			copy(work, arrived)
			if _, ok := placeByMap(work, maps); !ok {
				b.Fatal("placeByMap refused distinct maps")
			}
		}
	})
}
