package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-shuffle/sluice/layout"
)

// mapPlan is what a test producer writes: regions of (subpartition,
// payload size) buffers.
type mapPlan struct {
	broadcast []bool
	regions   [][][2]int
}

func (p *mapPlan) write(t testing.TB, ctx context.Context, w *MapWriter, m uint32) (want map[uint32][]byte) {
	t.Helper()
	want = map[uint32][]byte{}
	for ri, reg := range p.regions {
		if err := w.StartRegion(p.broadcast[ri]); err != nil {
			t.Fatal(err)
		}
		for bi, b := range reg {
			sub := uint32(b[0])
			if p.broadcast[ri] {
				sub = layout.AllSubpartitions
			}
			stored := storedBuffer(sub, payload(b[1], m, uint32(ri), uint32(bi)))
			var err error
			if bi%3 == 2 || len(stored) > w.MaxReserve() {
				err = w.Write(ctx, stored)
			} else {
				err = reserveWrite(ctx, w, stored)
			}
			if err != nil {
				t.Fatalf("region %d buffer %d: %v", ri, bi, err)
			}
			want[sub] = append(want[sub], stored...)
		}
		if err := w.FinishRegion(); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

var testPlan = mapPlan{
	broadcast: []bool{false, true, false},
	regions: [][][2]int{
		{{0, 1000}, {0, 70000}, {2, 5}, {3, 40000}, {3, 40000}, {7, 100}},
		{{0, 3000}, {0, 200000}},
		{{1, 65000}, {5, 65536 - 24}, {9, 1}},
	},
}

func TestMapWriteRead(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		s := openTestStore(t, testConfig(backend, dir))
		ctx := context.Background()
		w, err := s.CreateMap(ctx, MapSpec{Job: "job", Dataset: "ds", Map: 3, Attempt: 1, Subpartitions: 10, SizeHint: 100 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateMap(ctx, MapSpec{Job: "job", Dataset: "ds", Map: 3, Attempt: 1, Subpartitions: 10}); !errors.Is(err, ErrExists) {
			t.Fatalf("second CreateMap: %v, want ErrExists", err)
		}
		if _, err := s.OpenMap("job", "ds", 3, 1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("OpenMap before commit: %v, want ErrNotFound", err)
		}
		want := testPlan.write(t, ctx, w, 3)
		res, err := w.Finish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, layout.MapPartitionPath([]byte("job"), []byte("ds"), 3, 1))
		st, err := os.Stat(path)
		if err != nil || st.Size() != res.Length {
			t.Fatalf("file: %v, %v; committed length %d", st, err, res.Length)
		}
		verifyMapFile(t, path)

		r, err := s.OpenMap("job", "ds", 3, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		bc := want[layout.AllSubpartitions]
		for sub := uint32(0); sub < 10; sub++ {
			got := readAllExtents(t, r, sub, sub+1)
			// Regions come in file order: region 0's buffers, the broadcast
			// region, region 2's.
			exp := expectSub(sub, bc)
			if !bytes.Equal(got, exp) {
				t.Fatalf("subpartition %d: %d bytes, want %d", sub, len(got), len(exp))
			}
		}
		if got := readAllExtents(t, r, 0, 10); len(got) != int(r.Partition().Footer.DataBytes) {
			t.Fatalf("range [0, 10): %d bytes, the file has %d data bytes", len(got), r.Partition().Footer.DataBytes)
		}
	})
}

// expectSub is what subpartition sub reads from testPlan written by map 3.
func expectSub(sub uint32, broadcast []byte) []byte {
	var out []byte
	for ri, reg := range testPlan.regions {
		if testPlan.broadcast[ri] {
			out = append(out, broadcast...)
			continue
		}
		for bi, b := range reg {
			if uint32(b[0]) == sub {
				out = append(out, storedBuffer(sub, payload(b[1], 3, uint32(ri), uint32(bi)))...)
			}
		}
	}
	return out
}

// verifyMapFile runs the layout's streaming verifier over a whole file.
func verifyMapFile(t testing.TB, path string) layout.MapSummary {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := layout.NewMapVerifier()
	if _, err := io.Copy(v, f); err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	sum, err := v.Finish()
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	return sum
}

// TestReleaseDuringReservation releases a dataset while one of its
// MapWriters has a reservation open, as when the server is reading a
// buffer from the socket into it. The reserved memory stays the writer's
// until it commits or cancels: another writer must never be handed memory
// that is still being written.
func TestReleaseDuringReservation(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s := openTestStore(t, testConfig(backend, t.TempDir()))
		ctx := context.Background()
		open := func(ds string) *MapWriter {
			w, err := s.CreateMap(ctx, MapSpec{Job: "job", Dataset: ds, Subpartitions: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.StartRegion(false); err != nil {
				t.Fatal(err)
			}
			return w
		}
		gone := open("gone")
		late := storedBuffer(0, payload(1000, 1))
		parts, err := gone.Reserve(ctx, len(late))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, "job", "gone"); err != nil {
			t.Fatal(err)
		}

		kept := open("kept")
		want := storedBuffer(0, payload(1000, 2))
		if err := reserveWrite(ctx, kept, want); err != nil {
			t.Fatal(err)
		}
		// The rest of the released writer's buffer arrives from the socket.
		rest := late
		for _, p := range parts {
			rest = rest[copy(p, rest):]
		}
		if err := gone.Commit(); !errors.Is(err, ErrReleased) {
			t.Fatalf("Commit after the release: %v, want ErrReleased", err)
		}
		if err := kept.FinishRegion(); err != nil {
			t.Fatal(err)
		}
		if _, err := kept.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenMap("job", "kept", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if got := readAllExtents(t, r, 0, 1); !bytes.Equal(got, want) {
			t.Fatalf("the kept partition reads other bytes than it was given (%d, %d bytes)", len(got), len(want))
		}
		// The store's Close (cleanup) checks that every buffer came back.
	})
}
