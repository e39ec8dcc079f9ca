package scheduler

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/uring"
)

// storedBuffer is a buffer as a producer sends it: header with both CRCs,
// then the payload.
func storedBuffer(sub uint32, p []byte) []byte {
	h := layout.BufferHeader{Subpartition: sub, Codec: layout.CodecNone, PayloadLength: uint32(len(p)), UncompressedLength: uint32(len(p)), PayloadCRC: layout.Checksum(p)}
	b := make([]byte, layout.BufferHeaderSize, layout.BufferHeaderSize+len(p))
	if err := layout.PutBufferHeader(b, &h); err != nil {
		panic(err)
	}
	return append(b, p...)
}

// TestEngineMapPartitions writes MapPartitions through the storage engine,
// resolves every consumer's extents with the engine's readers (index blocks
// through the scheduler's index cache), and reads them all at once through
// the scheduler with the buffer verifier: each consumer gets exactly the
// bytes the engine's own sequential read gives.
func TestEngineMapPartitions(t *testing.T) {
	for _, backend := range []string{diskio.BackendURing, diskio.BackendPool, diskio.BackendBuffered} {
		t.Run(backend, func(t *testing.T) {
			if backend == diskio.BackendURing {
				if err := uring.Probe(); err != nil {
					t.Skipf("io_uring unusable: %v", err)
				}
			}
			testEngineMapPartitions(t, backend)
		})
	}
}

func testEngineMapPartitions(t *testing.T, backend string) {
	const (
		maps = 4
		subs = 24
	)
	ctx := context.Background()
	pool, err := mem.New(mem.Config{BufferBytes: 64 << 10, Buffers: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := pool.Close(); err != nil {
			t.Error(err)
		}
	}()
	store, err := engine.Open(ctx, engine.Config{
		Dirs: []engine.DirConfig{{Path: t.TempDir()}}, Backend: backend, Pool: pool, WriteBytesPerDisk: 4 << 20,
		ReserveBytes: -1, HealthInterval: -1, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	}()
	for m := range maps {
		w, err := store.CreateMap(ctx, engine.MapSpec{Job: "job", Dataset: "ds", Map: uint32(m), Subpartitions: subs})
		if err != nil {
			t.Fatal(err)
		}
		for region := range 3 {
			broadcast := m == 1 && region == 1
			if err := w.StartRegion(broadcast); err != nil {
				t.Fatal(err)
			}
			for sub := range uint32(subs) {
				if broadcast {
					sub = layout.AllSubpartitions
				}
				// Some subpartitions have nothing in a region, some several
				// buffers, some a buffer of several pool buffers.
				for k := range (int(sub) + region + m) % 3 {
					n := 1 + (int(sub)*977+region*131+k*7919+m)%(90<<10)
					if err := w.Write(ctx, storedBuffer(sub, bytes.Repeat([]byte{byte(m*31 + int(sub) + k)}, n))); err != nil {
						t.Fatal(err)
					}
				}
				if broadcast {
					break
				}
			}
			if err := w.FinishRegion(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}

	disk := store.Disks()[0]
	s, err := New(Config{IO: disk.IO(), Buffers: pool.NewShare("read", 64), MaxReadBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	var readers []*engine.MapReader
	for m := range maps {
		mr, err := store.OpenMap("job", "ds", uint32(m), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer mr.Close()
		key, _, err := KeyOf(mr.File())
		if err != nil {
			t.Fatal(err)
		}
		mr.UseIndexReader(s.IndexCache().ReaderAt(key, mr.ReaderAt()))
		readers = append(readers, mr)
	}
	// All consumers register before any read is issued, as when a stage's
	// consumers start together.
	resume := pause(s)
	var wg sync.WaitGroup
	for c := range uint32(subs) {
		for m, mr := range readers {
			exts, err := mr.Extents(c, c+1, nil)
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			for _, e := range exts {
				b := make([]byte, e.Length)
				if err := mr.ReadExtent(ctx, e, b); err != nil {
					t.Fatal(err)
				}
				want = append(want, b...)
			}
			v := NewBufferVerifier(exts, c, c+1)
			r, err := s.Register(ReaderConfig{Job: "job", Extents: exts, Verify: v.Verify})
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.AddCredit(64 << 10)
				var got []byte
				for {
					ch, err := r.Next(ctx)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Errorf("consumer %d map %d: %v", c, m, err)
						return
					}
					got = append(got, ch.Data...)
					ch.Release()
					r.AddCredit(int64(len(ch.Data)))
				}
				if !bytes.Equal(got, want) {
					t.Errorf("consumer %d map %d: %d bytes, the engine reads %d", c, m, len(got), len(want))
				}
			}()
		}
	}
	resume()
	wg.Wait()
	st := s.Stats()
	if st.Index.Hits == 0 {
		t.Errorf("the index cache had no hit: %+v", st.Index)
	}
	if st.Pieces <= st.Reads {
		t.Errorf("%d pieces in %d reads: nothing merged", st.Pieces, st.Reads)
	}
	t.Logf("%+v", st)
}
