package engine

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/uring"
)

// The suite runs on every IO backend, like engine/diskio's conformance
// test.
var testBackends = []string{diskio.BackendURing, diskio.BackendPool, diskio.BackendBuffered}

func forBackends(t *testing.T, fn func(t *testing.T, backend string)) {
	for _, b := range testBackends {
		t.Run(b, func(t *testing.T) {
			if b == diskio.BackendURing {
				if err := uring.Probe(); err != nil {
					t.Skipf("io_uring unusable here: %v", err)
				}
			}
			fn(t, b)
		})
	}
}

const testBufferBytes = 64 << 10

// testConfig is a small store: 64 KiB buffers (so that a few hundred KiB
// cross many buffer boundaries), no reserve, no background health checks.
func testConfig(backend string, dirs ...string) Config {
	cfg := Config{
		Backend:        backend,
		BufferBytes:    testBufferBytes,
		PoolBytes:      16 << 20,
		ReserveBytes:   -1,
		HealthInterval: -1,
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, d := range dirs {
		cfg.Dirs = append(cfg.Dirs, DirConfig{Path: d})
	}
	return cfg
}

func openTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// payload returns n deterministic bytes for the given coordinates: a
// producer that reruns writes the same bytes, and a test can regenerate
// what it expects.
func payload(n int, seed ...uint32) []byte {
	x := uint64(0x9e3779b97f4a7c15)
	for _, s := range seed {
		x = (x ^ uint64(s)) * 0xbf58476d1ce4e5b9
		x ^= x >> 31
	}
	b := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b[:n:n]
}

// storedBuffer builds a buffer as a producer does: header with both CRCs,
// then the payload.
func storedBuffer(sub uint32, p []byte) []byte {
	b := make([]byte, layout.BufferHeaderSize+len(p))
	h := layout.BufferHeader{Subpartition: sub, PayloadLength: uint32(len(p)), UncompressedLength: uint32(len(p)), PayloadCRC: layout.Checksum(p)}
	if err := layout.PutBufferHeader(b, &h); err != nil {
		panic(err)
	}
	copy(b[layout.BufferHeaderSize:], p)
	return b
}

// segmentBytes builds a segment as a producer does.
func segmentBytes(m, a, seq uint32, p []byte) []byte {
	b := make([]byte, layout.SegmentHeaderSize+len(p))
	h := layout.SegmentHeader{Map: m, Attempt: a, Seq: seq, PayloadLength: uint32(len(p)), UncompressedLength: uint32(len(p)), PayloadCRC: layout.Checksum(p)}
	if err := layout.PutSegmentHeader(b, &h); err != nil {
		panic(err)
	}
	copy(b[layout.SegmentHeaderSize:], p)
	return b
}

// reserveWrite stores one buffer through the zero-copy path.
func reserveWrite(ctx context.Context, w *MapWriter, stored []byte) error {
	parts, err := w.Reserve(ctx, len(stored))
	if err != nil {
		return err
	}
	rest := stored
	for _, p := range parts {
		rest = rest[copy(p, rest):]
	}
	return w.Commit()
}

// pushReserve stores one segment through the zero-copy path.
func pushReserve(ctx context.Context, rp *ReducePartition, seg []byte) (bool, error) {
	parts, dup, err := rp.ReserveSegment(ctx, seg[:layout.SegmentHeaderSize])
	if err != nil || dup {
		return dup, err
	}
	rest := seg[layout.SegmentHeaderSize:]
	for _, p := range parts {
		rest = rest[copy(p, rest):]
	}
	return false, rp.CommitSegment()
}

// readAllExtents reads every extent of subpartitions [start, end).
func readAllExtents(t testing.TB, r *MapReader, start, end uint32) []byte {
	t.Helper()
	exts, err := r.Extents(start, end, nil)
	if err != nil {
		t.Fatalf("Extents [%d, %d): %v", start, end, err)
	}
	var out []byte
	for _, e := range exts {
		b := make([]byte, e.Length)
		if err := r.ReadExtent(context.Background(), e, b); err != nil {
			t.Fatalf("ReadExtent: %v", err)
		}
		c := NewMapChecker(e, start, end)
		if _, err := c.Check(b, nil); err != nil {
			t.Fatalf("check extent: %v", err)
		}
		if err := c.Finish(); err != nil {
			t.Fatalf("check extent: %v", err)
		}
		out = append(out, b...)
	}
	return out
}
