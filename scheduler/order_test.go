package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// readSpec is a read the trace must show: file, offset, length, pieces.
type readSpec struct {
	file        int
	off, length int64
	pieces      int
}

type extSpec struct {
	file     int
	off, len int64
}

// runOrdered registers one reader per entry of readers, all with credit
// for everything, while the scheduler is paused, then lets it run with one
// read in flight and returns the reads it issued.
func runOrdered(t *testing.T, e *env, s *Scheduler, files []*diskio.File, readers [][]extSpec) []readSpec {
	t.Helper()
	resume := pause(s)
	var wg sync.WaitGroup
	errs := make(chan error, len(readers))
	var rs []*Reader
	var all [][]Extent
	for _, spec := range readers {
		var exts []Extent
		var total int64
		for _, x := range spec {
			exts = append(exts, Extent{File: files[x.file], Offset: x.off, Length: x.len})
			total += x.len
		}
		r, err := s.Register(ReaderConfig{Job: "j", Extents: exts})
		if err != nil {
			t.Fatal(err)
		}
		r.AddCredit(total)
		rs = append(rs, r)
		all = append(all, exts)
	}
	resume()
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.drain(context.Background(), r, all[i], 0); err != nil {
				errs <- fmt.Errorf("reader %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var out []readSpec
	for _, tr := range s.Trace() {
		fid := -1
		for i, f := range files {
			if s.fileKeyHash(f) == tr.File {
				fid = i
			}
		}
		out = append(out, readSpec{file: fid, off: tr.Offset, length: tr.Length, pieces: tr.Pieces})
	}
	return out
}

// fileKeyHash is the trace's name of an open file.
func (s *Scheduler) fileKeyHash(f *diskio.File) uint64 {
	k, _, err := KeyOf(f)
	if err != nil {
		panic(err)
	}
	return k.hash()
}

func TestOrderAndMerge(t *testing.T) {
	const K = 1 << 10
	cases := []struct {
		name     string
		cfg      Config
		readers  [][]extSpec
		want     []readSpec
		wantNote string
		// byDisk: reads of different files go in the order of the files'
		// positions on the disk, which the test does not choose (want
		// lists them by file).
		byDisk bool
	}{
		{
			name:    "adjacent extents of three readers make one read",
			readers: [][]extSpec{{{0, 0, 1000}}, {{0, 1000, 2000}}, {{0, 3000, 500}}},
			want:    []readSpec{{0, 0, 3500, 3}},
		},
		{
			name:    "a hole within the merge gap is read through",
			cfg:     Config{MergeGapBytes: 4 * K},
			readers: [][]extSpec{{{0, 0, 1000}}, {{0, 1100, 900}}},
			want:    []readSpec{{0, 0, 2000, 2}},
		},
		{
			name:    "a hole beyond the merge gap splits the read",
			cfg:     Config{MergeGapBytes: 64},
			readers: [][]extSpec{{{0, 0, 1000}}, {{0, 1100, 900}}},
			want:    []readSpec{{0, 0, 1000, 1}, {0, 1100, 900, 1}},
		},
		{
			name:    "MaxReadBytes cuts a long extent",
			cfg:     Config{MaxReadBytes: 64 * K},
			readers: [][]extSpec{{{0, 0, 150 * K}}},
			want:    []readSpec{{0, 0, 64 * K, 1}, {0, 64 * K, 64 * K, 1}, {0, 128 * K, 22 * K, 1}},
		},
		{
			name:    "MaxReadBytes cuts a merged run inside a reader's piece",
			cfg:     Config{MaxReadBytes: 64 * K},
			readers: [][]extSpec{{{0, 0, 40 * K}}, {{0, 40 * K, 40 * K}}},
			want:    []readSpec{{0, 0, 64 * K, 2}, {0, 64 * K, 16 * K, 1}},
		},
		{
			name:    "identical extents (broadcast) share one read",
			readers: [][]extSpec{{{0, 0, 5000}}, {{0, 0, 5000}}, {{0, 0, 5000}}},
			want:    []readSpec{{0, 0, 5000, 3}},
		},
		{
			name:    "overlapping extents are read once",
			readers: [][]extSpec{{{0, 0, 5000}}, {{0, 2000, 5000}}},
			want:    []readSpec{{0, 0, 7000, 2}},
		},
		{
			name:    "two files are two reads",
			readers: [][]extSpec{{{0, 0, 100}}, {{1, 0, 100}}},
			want:    []readSpec{{0, 0, 100, 1}, {1, 0, 100, 1}},
			byDisk:  true,
		},
		{
			name:    "the sweep goes up by position, whatever the arrival order",
			cfg:     Config{MergeGapBytes: -1},
			readers: [][]extSpec{{{0, 500 * K, 10}}, {{0, 100 * K, 10}}, {{0, 300 * K, 10}}},
			want:    []readSpec{{0, 100 * K, 10, 1}, {0, 300 * K, 10, 1}, {0, 500 * K, 10, 1}},
		},
		{
			name:    "a reader's next extent waits for its current one",
			cfg:     Config{MergeGapBytes: -1},
			readers: [][]extSpec{{{0, 0, 100}, {0, 10000, 100}}, {{0, 100, 9900}}},
			want:    []readSpec{{0, 0, 10000, 2}, {0, 10000, 100, 1}},
		},
		{
			name:     "FIFO reads every piece alone in arrival order",
			cfg:      Config{Policy: FIFO},
			readers:  [][]extSpec{{{0, 500 * K, 10}}, {{0, 100 * K, 10}}, {{0, 100*K + 10, 10}}},
			want:     []readSpec{{0, 500 * K, 10, 1}, {0, 100 * K, 10, 1}, {0, 100*K + 10, 10, 1}},
			wantNote: "no merging even of touching pieces",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Buffered files: alignment 1, so reads are exactly the
			// ranges the pieces need.
			e := newEnv(t, envConfig{backend: diskio.BackendBuffered, bufferBytes: 64 << 10, buffers: 32})
			files := []*diskio.File{e.file(1 << 20), e.file(1 << 20)}
			cfg := c.cfg
			cfg.Depth, cfg.Trace, cfg.CacheBytes = 1, true, -1
			if cfg.MaxReadBytes == 0 {
				cfg.MaxReadBytes = 256 << 10
			}
			got := runOrdered(t, e, e.sched(cfg), files, c.readers)
			want := c.want
			if c.byDisk {
				want = inDiskOrder(t, files, want)
			}
			if !slices.Equal(got, want) {
				t.Errorf("reads %v, want %v %s", got, want, c.wantNote)
			}
		})
	}
}

// inDiskOrder orders reads of whole files by where each file's first byte
// lies on the disk (FIEMAP), as the elevator does. A file system that
// cannot say leaves them in file order: the elevator then places files in
// the order they were registered, which is file order in these tests.
func inDiskOrder(t *testing.T, files []*diskio.File, reads []readSpec) []readSpec {
	t.Helper()
	pos := make([]int64, len(files))
	for i, f := range files {
		ext, err := Fiemap(f, 1)
		if errors.Is(err, ErrNoFiemap) {
			return reads
		}
		if err != nil {
			t.Fatal(err)
		}
		pos[i] = ext[0].Physical
	}
	out := slices.Clone(reads)
	slices.SortStableFunc(out, func(a, b readSpec) int { return cmp.Compare(pos[a.file], pos[b.file]) })
	return out
}

// TestSweepWraps checks C-SCAN: with the head past a piece, the sweep
// serves what lies ahead first, then wraps to the lowest position.
func TestSweepWraps(t *testing.T) {
	e := newEnv(t, envConfig{backend: diskio.BackendBuffered})
	f := e.file(1 << 20)
	s := e.sched(Config{Depth: 1, Trace: true, CacheBytes: -1, MergeGapBytes: -1})
	read := func(exts ...Extent) []*Reader {
		var rs []*Reader
		resume := pause(s)
		for _, x := range exts {
			r, err := s.Register(ReaderConfig{Extents: []Extent{x}})
			if err != nil {
				t.Fatal(err)
			}
			r.AddCredit(x.Length)
			rs = append(rs, r)
		}
		resume()
		return rs
	}
	drainAll := func(rs []*Reader, exts ...Extent) {
		for i, r := range rs {
			if _, err := e.drain(context.Background(), r, exts[i:i+1], 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	x400 := Extent{File: f, Offset: 400 << 10, Length: 10}
	drainAll(read(x400), x400)
	x100 := Extent{File: f, Offset: 100 << 10, Length: 10}
	x700 := Extent{File: f, Offset: 700 << 10, Length: 10}
	drainAll(read(x100, x700), x100, x700)
	var offs []int64
	for _, r := range s.Trace() {
		offs = append(offs, r.Offset)
	}
	if want := []int64{400 << 10, 700 << 10, 100 << 10}; !slices.Equal(offs, want) {
		t.Fatalf("reads at %v, want %v (ahead of the head first, then wrap)", offs, want)
	}
	if s.Stats().Passes != 1 {
		t.Errorf("%d passes, want 1", s.Stats().Passes)
	}
}

// TestSweepRandomized checks the sweep's properties on random readers over
// real files, positions from FIEMAP: every read is within the maximum, the
// reads' disk positions only go down when the sweep wraps, and every byte
// arrives in order (drain).
func TestSweepRandomized(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			e := newEnv(t, envConfig{bufferBytes: 64 << 10, buffers: 64})
			var readers [][]extSpec
			files := []*diskio.File{e.file(2 << 20), e.file(1 << 20), e.file(3<<20 + 5)}
			for fi, size := range []int64{2 << 20, 1 << 20, 3<<20 + 5} {
				for off := int64(0); off < size; {
					n := min(int64(1+rng.IntN(30<<10)), size-off)
					if rng.IntN(5) > 0 {
						r := rng.IntN(30)
						for len(readers) <= r {
							readers = append(readers, nil)
						}
						readers[r] = append(readers[r], extSpec{fi, off, n})
					}
					off += int64(n) + int64(rng.IntN(2))*int64(rng.IntN(100<<10))
				}
			}
			maxRead := int64(128 << 10)
			s2 := e.sched(Config{Depth: 1, Trace: true, CacheBytes: -1, MaxReadBytes: int(maxRead), Deadline: 1 << 40})
			resume := pause(s2)
			var rs []*Reader
			var all [][]Extent
			for _, spec := range readers {
				var exts []Extent
				var total int64
				for _, x := range spec {
					exts = append(exts, Extent{File: files[x.file], Offset: x.off, Length: x.len})
					total += x.len
				}
				r, err := s2.Register(ReaderConfig{Extents: exts})
				if err != nil {
					t.Fatal(err)
				}
				r.AddCredit(total)
				rs, all = append(rs, r), append(all, exts)
			}
			resume()
			var wg sync.WaitGroup
			for i, r := range rs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := e.drain(context.Background(), r, all[i], 0); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			st := s2.Stats()
			trace := s2.Trace()
			descents := 0
			for i, r := range trace {
				if r.Length > maxRead {
					t.Errorf("read %d: %d bytes > %d", i, r.Length, maxRead)
				}
				if i > 0 && r.Segments[0].Physical < trace[i-1].Segments[0].Physical {
					descents++
				}
			}
			if int64(descents) > st.Passes {
				t.Errorf("positions went down %d times in %d passes", descents, st.Passes)
			}
			if st.Pieces <= st.Reads {
				t.Errorf("%d pieces in %d reads: nothing merged", st.Pieces, st.Reads)
			}
			t.Logf("%d reads, %d pieces, %d passes", st.Reads, st.Pieces, st.Passes)
		})
	}
}
