package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
)

// segSize is the payload size of a test segment, varied so that segments
// straddle buffer boundaries and some exceed MaxReserve.
func segSize(m, a, seq, r uint32) int {
	switch (m + a*3 + seq*7 + r) % 5 {
	case 0:
		return 1
	case 1:
		return 3000
	case 2:
		return 20000
	case 3:
		return 70000 // more than a 64 KiB buffer: Push
	}
	return 511
}

func testSegment(m, a, seq, r uint32) []byte {
	return segmentBytes(m, a, seq, payload(segSize(m, a, seq, r), m, a, seq, r, 77))
}

// pushAll pushes n segments of (m, a) to rp, retrying some (the duplicates
// must be dropped), through both the zero-copy and the copying path.
func pushAll(ctx context.Context, rp *ReducePartition, m, a, n, r uint32) error {
	for seq := uint32(0); seq < n; seq++ {
		seg := testSegment(m, a, seq, r)
		tries := 1 + int(seq%3)/2
		for range tries {
			var dup bool
			var err error
			if len(seg) <= rp.MaxReserve() && seq%2 == 0 {
				dup, err = pushReserve(ctx, rp, seg)
			} else {
				dup, err = rp.Push(ctx, seg)
			}
			if err != nil {
				return fmt.Errorf("map %d attempt %d seq %d: %w", m, a, seq, err)
			}
			_ = dup
		}
	}
	return nil
}

// readReduce reads a finalized ReducePartition the way the scheduler does:
// the segment extent in blocks of odd sizes through an ExtentChecker, and
// returns the served segments by (map, attempt, seq).
func readReduce(t testing.TB, s *Store, job, ds string, r uint32, block int) map[[3]uint32][]byte {
	t.Helper()
	rr, err := s.OpenReduceReader(job, ds, r)
	if err != nil {
		t.Fatalf("OpenReduceReader %d: %v", r, err)
	}
	defer rr.Close()
	e := rr.Segments()
	b := make([]byte, e.Length)
	if err := rr.ReadExtent(context.Background(), e, b); err != nil {
		t.Fatal(err)
	}
	f, err := rr.Filter()
	if err != nil {
		t.Fatal(err)
	}
	c := NewReduceChecker(e, f)
	var served []byte
	var out [][]byte
	for off := 0; off < len(b); off += block {
		if out, err = c.Check(b[off:min(off+block, len(b))], out[:0]); err != nil {
			t.Fatalf("reduce %d: check: %v", r, err)
		}
		for _, p := range out {
			served = append(served, p...)
		}
	}
	if err := c.Finish(); err != nil {
		t.Fatalf("reduce %d: finish: %v", r, err)
	}
	got := map[[3]uint32][]byte{}
	for len(served) > 0 {
		h, err := layout.DecodeSegmentHeader(served)
		if err != nil {
			t.Fatalf("served bytes: %v", err)
		}
		seg := served[:h.FrameSize()]
		if err := h.CheckPayload(seg[layout.SegmentHeaderSize:]); err != nil {
			t.Fatal(err)
		}
		k := [3]uint32{h.Map, h.Attempt, h.Seq}
		if _, dup := got[k]; dup {
			t.Fatalf("segment %v served twice", k)
		}
		got[k] = seg
		served = served[h.FrameSize():]
	}
	return got
}

func verifyReduceFile(t testing.TB, path string) layout.ReduceSummary {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := layout.NewReduceVerifier(layout.ReduceVerifyOptions{})
	if _, err := io.Copy(v, f); err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	sum, err := v.Finish()
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	return sum
}

func TestReduceWriteRead(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		s := openTestStore(t, testConfig(backend, dir))
		ctx := context.Background()
		const maps, reduces, segs = 8, 4, 9
		spec := func(r uint32) ReduceSpec {
			return ReduceSpec{Job: "j", Dataset: "d", Reduce: r, MapCount: maps}
		}
		// committed attempt of each map; map 5's attempt 0 is aborted,
		// map 6's attempt 0 never commits and is superseded by attempt 1.
		committed := map[uint32]uint32{0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 0}
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for m := uint32(0); m < maps; m++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := uint32(0); r < reduces; r++ {
					rp, err := s.OpenReduce(ctx, spec(r))
					if err != nil {
						errs <- err
						return
					}
					if m == 5 || m == 6 {
						if err := pushAll(ctx, rp, m, 0, segs/2, r); err != nil {
							errs <- err
							return
						}
						if m == 5 {
							if err := rp.Abort(m, 0); err != nil {
								errs <- err
								return
							}
							if _, err := rp.Push(ctx, testSegment(m, 0, segs/2, r)); !errors.Is(err, ErrAttemptClosed) {
								errs <- fmt.Errorf("push after abort: %v", err)
								return
							}
						}
					}
					a := committed[m]
					if err := pushAll(ctx, rp, m, a, segs, r); err != nil {
						errs <- err
						return
					}
					// A gap is refused, a commit with a wrong count too.
					if _, err := rp.Push(ctx, testSegment(m, a, segs+1, r)); !errors.Is(err, ErrSeqGap) {
						errs <- fmt.Errorf("gap: %v", err)
						return
					}
					if err := rp.Commit(ctx, m, a, segs+1); !errors.Is(err, ErrSeqGap) {
						errs <- fmt.Errorf("short commit: %v", err)
						return
					}
					if err := rp.Commit(ctx, m, a, segs); err != nil {
						errs <- err
						return
					}
					// Retried commit: fine; another attempt: conflict.
					if err := rp.Commit(ctx, m, a, segs); err != nil {
						errs <- fmt.Errorf("retried commit: %v", err)
						return
					}
					if err := rp.Commit(ctx, m, a+7, 0); !errors.Is(err, ErrConflict) {
						errs <- fmt.Errorf("second attempt commit: %v", err)
						return
					}
					if _, err := rp.Push(ctx, testSegment(m, a+7, 0, r)); !errors.Is(err, ErrConflict) {
						errs <- fmt.Errorf("push of another attempt after the commit: %v", err)
						return
					}
					// A retried push after the commit is still acknowledged.
					if dup, err := rp.Push(ctx, testSegment(m, a, 0, r)); err != nil || !dup {
						errs <- fmt.Errorf("retry after commit: %v %v", dup, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if _, err := s.OpenReduceReader("j", "d", 0); !errors.Is(err, ErrNotFinalized) {
			t.Fatalf("reader before finalize: %v", err)
		}
		for r := uint32(0); r < reduces; r++ {
			// The producers committed concurrently; the list is by map.
			rp, _ := s.Reduce("j", "d", r)
			if c := rp.Committed(); len(c) != maps || !slices.IsSortedFunc(c, func(a, b layout.AttemptCommit) int { return cmp.Compare(a.Map, b.Map) }) {
				t.Fatalf("partition %d committed %v", r, c)
			}
			if n := rp.CommittedCount(); n != maps {
				t.Fatalf("partition %d: CommittedCount %d, want %d", r, n, maps)
			}
			res, err := s.FinalizeReduce(ctx, "j", "d", r)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Committed) != maps {
				t.Fatalf("finalize: %d commits", len(res.Committed))
			}
			if _, err := rp.Push(ctx, testSegment(0, 0, segs, r)); !errors.Is(err, ErrFinalized) {
				t.Fatalf("push after finalize: %v", err)
			}
			path := filepath.Join(dir, layout.ReducePartitionPath([]byte("j"), []byte("d"), r))
			if st, err := os.Stat(path); err != nil || st.Size() != res.Length {
				t.Fatalf("file %v %v, finalized length %d", st, err, res.Length)
			}
			verifyReduceFile(t, path)
			for _, block := range []int{1 << 20, 4096, 1000, 31, 7} {
				got := readReduce(t, s, "j", "d", r, block)
				if len(got) != maps*segs {
					t.Fatalf("reduce %d block %d: %d segments served, want %d", r, block, len(got), maps*segs)
				}
				for m := uint32(0); m < maps; m++ {
					for seq := uint32(0); seq < segs; seq++ {
						want := testSegment(m, committed[m], seq, r)
						if g := got[[3]uint32{m, committed[m], seq}]; !bytes.Equal(g, want) {
							t.Fatalf("reduce %d map %d seq %d: wrong bytes", r, m, seq)
						}
					}
				}
			}
		}
	})
}

// TestDedup is the table of the push rules.
func TestDedup(t *testing.T) {
	type push struct {
		m, a, seq uint32
		dup       bool
		err       error
	}
	cases := []struct {
		name   string
		pushes []push
		commit [3]uint32 // map, attempt, segments; segments = ^0 for none
		cerr   error
	}{
		{"in order", []push{{0, 0, 0, false, nil}, {0, 0, 1, false, nil}, {0, 0, 2, false, nil}}, [3]uint32{0, 0, 3}, nil},
		{"retry dropped", []push{{0, 0, 0, false, nil}, {0, 0, 0, true, nil}, {0, 0, 1, false, nil}, {0, 0, 0, true, nil}}, [3]uint32{0, 0, 2}, nil},
		{"gap refused", []push{{0, 0, 0, false, nil}, {0, 0, 2, false, ErrSeqGap}, {0, 0, 1, false, nil}}, [3]uint32{0, 0, 2}, nil},
		{"first seq not 0", []push{{1, 0, 1, false, ErrSeqGap}}, [3]uint32{1, 0, 0}, nil},
		{"attempts separate", []push{{0, 0, 0, false, nil}, {0, 1, 0, false, nil}, {0, 1, 1, false, nil}}, [3]uint32{0, 1, 2}, nil},
		{"commit missing segments", []push{{0, 0, 0, false, nil}}, [3]uint32{0, 0, 2}, ErrSeqGap},
		{"commit too few", []push{{0, 0, 0, false, nil}, {0, 0, 1, false, nil}}, [3]uint32{0, 0, 1}, ErrSeqGap},
		{"map out of range", []push{{9, 0, 0, false, ErrBadData}}, [3]uint32{0, 0, 0}, nil},
	}
	s := openTestStore(t, testConfig("", t.TempDir()))
	ctx := context.Background()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "dedup", Dataset: "d", Reduce: uint32(i), MapCount: 4})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range c.pushes {
				dup, err := rp.Push(ctx, segmentBytes(p.m, p.a, p.seq, payload(100, p.m, p.a, p.seq)))
				if dup != p.dup || !errors.Is(err, p.err) || (p.err == nil && err != nil) {
					t.Fatalf("push %+v: dup %v, err %v", p, dup, err)
				}
			}
			// Held is where a retried push channel continues.
			var held uint32
			for _, p := range c.pushes {
				if p.m == c.commit[0] && p.a == c.commit[1] && p.err == nil && !p.dup {
					held++
				}
			}
			if n, b := rp.Held(c.commit[0], c.commit[1]); n != held || b != uint64(held)*100 {
				t.Fatalf("Held: %d segments, %d bytes; want %d", n, b, held)
			}
			err = rp.Commit(ctx, c.commit[0], c.commit[1], c.commit[2])
			if !errors.Is(err, c.cerr) || (c.cerr == nil && err != nil) {
				t.Fatalf("commit %v: %v, want %v", c.commit, err, c.cerr)
			}
			if err == nil {
				if _, err := rp.Finalize(ctx); err != nil || !rp.Finalized() {
					t.Fatalf("finalize: %v", err)
				}
				if n, _ := rp.Held(c.commit[0], c.commit[1]); n != c.commit[2] {
					t.Fatalf("Held after finalize: %d, want %d", n, c.commit[2])
				}
			}
		})
	}
}

// TestMergeBufferPressure: many ReducePartitions, a disk share of a few
// buffers: the largest merge buffers are written out early, nothing waits
// forever, nothing is allocated beyond the pool, and the data is intact.
func TestMergeBufferPressure(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		cfg := testConfig(backend, dir)
		cfg.WriteBytesPerDisk = 6 * testBufferBytes
		s := openTestStore(t, cfg)
		ctx := context.Background()
		const reduces, maps = 24, 6
		var wg sync.WaitGroup
		errs := make(chan error, maps)
		for m := uint32(0); m < maps; m++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(m), 1))
				next := make([]uint32, reduces)
				for i := 0; i < 40*reduces; i++ {
					r := uint32(rng.IntN(reduces))
					rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "p", Dataset: "d", Reduce: r, MapCount: maps})
					if err != nil {
						errs <- err
						return
					}
					n := 100 + rng.IntN(9000)
					if _, err := pushReserve(ctx, rp, segmentBytes(m, 0, next[r], payload(n, m, next[r], r))); err != nil {
						errs <- err
						return
					}
					next[r]++
				}
				// One producer commit for every partition it pushed to.
				counts := map[uint32]uint32{}
				for r := uint32(0); r < reduces; r++ {
					if next[r] > 0 {
						counts[r] = next[r]
					}
				}
				if err := s.CommitAttempt(ctx, "p", "d", m, 0, counts); err != nil {
					errs <- err
					return
				}
				// Retried: idempotent.
				if err := s.CommitAttempt(ctx, "p", "d", m, 0, counts); err != nil {
					errs <- fmt.Errorf("retried CommitAttempt: %w", err)
					return
				}
				counts[reduces+5] = 1
				if err := s.CommitAttempt(ctx, "p", "d", m, 0, counts); !errors.Is(err, ErrNotFound) {
					errs <- fmt.Errorf("CommitAttempt to a missing partition: %v", err)
					return
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		st := s.Stats().Disks[0]
		if st.PressureFlush == 0 || st.BufferWaits == 0 {
			t.Fatalf("no pressure: %d flushes, %d waits", st.PressureFlush, st.BufferWaits)
		}
		if st.BuffersInUse > st.BufferLimit {
			t.Fatalf("%d buffers in use, limit %d", st.BuffersInUse, st.BufferLimit)
		}
		for r := uint32(0); r < reduces; r++ {
			if _, err := s.FinalizeReduce(ctx, "p", "d", r); err != nil {
				t.Fatal(err)
			}
			verifyReduceFile(t, filepath.Join(dir, layout.ReducePartitionPath([]byte("p"), []byte("d"), r)))
			got := readReduce(t, s, "p", "d", r, 1<<20)
			keys := make([][3]uint32, 0, len(got))
			for k := range got {
				keys = append(keys, k)
			}
			sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
			for _, k := range keys {
				h, _ := layout.DecodeSegmentHeader(got[k])
				if !bytes.Equal(got[k][layout.SegmentHeaderSize:], payload(int(h.PayloadLength), k[0], k[2], r)) {
					t.Fatalf("reduce %d segment %v: wrong payload", r, k)
				}
			}
		}
		if in := s.Pool().Stats().InUse; in != 0 {
			t.Fatalf("%d pool buffers still in use", in)
		}
	})
}

func TestPlaceByMap(t *testing.T) {
	c := func(maps ...uint32) []layout.AttemptCommit {
		var out []layout.AttemptCommit
		for _, m := range maps {
			out = append(out, layout.AttemptCommit{Map: m, Attempt: m + 1, Segments: 2 * m, Bytes: uint64(m) << 10})
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		in       []layout.AttemptCommit
		mapCount uint32
		want     []layout.AttemptCommit
		ok       bool
	}{
		{"sorted", c(0, 1, 2), 3, c(0, 1, 2), true},
		{"reversed with gaps", c(9, 4, 0, 7), 10, c(0, 4, 7, 9), true},
		{"empty", nil, 4, c(), true},
		{"a map twice", c(1, 2, 1), 3, nil, false},
		{"a map out of range", c(0, 3), 3, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := placeByMap(tc.in, tc.mapCount)
			if ok != tc.ok || (ok && !slices.Equal(got, tc.want)) {
				t.Fatalf("placeByMap = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// recordedWrite is a data write a test saw go to a ReducePartition file.
type recordedWrite struct{ off, end int64 }

// recordReduceWrites wraps cfg's IOs so that every write to a ReducePartition
// file is recorded (and nothing disturbed); take returns them and starts
// over.
func recordReduceWrites(cfg *Config) (take func() []recordedWrite) {
	var mu sync.Mutex
	var writes []recordedWrite
	cfg.WrapIO = func(_ string, inner diskio.IO) diskio.IO {
		f := diskio.NewFaulty(inner)
		f.Inject(diskio.Rule{Op: diskio.OpWrite, Path: "reduce-*", Match: func(_ diskio.Op, _ string, off int64, n int) bool {
			mu.Lock()
			writes = append(writes, recordedWrite{off, off + int64(n)})
			mu.Unlock()
			return false
		}})
		return f
	}
	return func() []recordedWrite {
		mu.Lock()
		defer mu.Unlock()
		w := writes
		writes = nil
		return w
	}
}

// checkWritesEndOnBlocks fails unless every write but the one that ends
// furthest ends on a block, and at least five of them came before it.
func checkWritesEndOnBlocks(t *testing.T, writes []recordedWrite, block int64) {
	t.Helper()
	last := int64(0)
	for _, w := range writes {
		last = max(last, w.end)
	}
	early := 0
	for _, w := range writes {
		if w.end == last {
			continue // the final write, padded to the alignment
		}
		early++
		if w.end%block != 0 {
			t.Errorf("write [%d, %d) ends inside a %d-byte block", w.off, w.end, block)
		}
	}
	if early < 5 {
		t.Fatalf("%d writes before the last: the test wrote nothing early (writes %v)", early, writes)
	}
}

// pushOddSegments pushes segs segments of odd sizes for map m, attempt 0,
// and commits them.
func pushOddSegments(t *testing.T, rp *ReducePartition, m uint32, segs int) {
	t.Helper()
	ctx := context.Background()
	for seq := uint32(0); seq < uint32(segs); seq++ {
		if _, err := pushReserve(ctx, rp, segmentBytes(m, 0, seq, payload(777+int(seq)%301, m, seq))); err != nil {
			t.Fatal(err)
		}
	}
	if err := rp.Commit(ctx, m, 0, uint32(segs)); err != nil {
		t.Fatal(err)
	}
}

// checkOddSegments reads the finalized partition back: maps 0..maps-1,
// segs segments each, as pushOddSegments wrote them.
func checkOddSegments(t *testing.T, s *Store, dir string, maps, segs int) {
	t.Helper()
	verifyReduceFile(t, filepath.Join(dir, layout.ReducePartitionPath([]byte("j"), []byte("d"), 0)))
	got := readReduce(t, s, "j", "d", 0, 1<<20)
	if len(got) != maps*segs {
		t.Fatalf("read %d segments of %d", len(got), maps*segs)
	}
	for k, b := range got {
		if !bytes.Equal(b[layout.SegmentHeaderSize:], payload(777+int(k[2])%301, k[0], k[2])) {
			t.Fatalf("segment %v differs", k)
		}
	}
}

// earlyWriteBlock returns the block early writes end on, skipping the test
// where it is the DIO alignment (every write ends on one anyway).
func earlyWriteBlock(t *testing.T, d *Disk) int64 {
	align := int64(max(d.align.Offset, 1))
	block := d.flushGranule(align)
	if block == align {
		t.Skipf("the file system's block (%d) is the DIO alignment: every write ends on one anyway", d.fsBlock)
	}
	return block
}

// TestEarlyWritesEndOnBlocks: a ReducePartition's merge buffer written out
// early (a disk with room for more writes, memory pressure) is written up
// to its last file system block, the rest kept in memory: every write of
// the file but the last ends on a block (ext4 would otherwise lock the
// inode for it, and io_uring hand it to a worker thread), and the file
// reads back whole.
func TestEarlyWritesEndOnBlocks(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		cfg := testConfig(backend, dir)
		take := recordReduceWrites(&cfg)
		s := openTestStore(t, cfg)
		block := earlyWriteBlock(t, s.Disks()[0])
		ctx := context.Background()
		rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "j", Dataset: "d", Reduce: 0, MapCount: 1})
		if err != nil {
			t.Fatal(err)
		}
		// The disk is idle: the writer writes its buffer out each time it
		// passes a quarter of it.
		pushOddSegments(t, rp, 0, 300)
		if _, err := s.FinalizeReduce(ctx, "j", "d", 0); err != nil {
			t.Fatal(err)
		}
		checkWritesEndOnBlocks(t, take(), block)
		if st := s.Disks()[0].Stats(); st.IdleFlush == 0 {
			t.Fatalf("no early writes counted (%+v)", st)
		}
		checkOddSegments(t, s, dir, 1, 300)
	})
}

// TestEarlyWritesEndOnBlocksAfterRecovery: a partition left open at Close
// (its last write padded, ending inside a block) resumes after recovery
// from the start of that block, so that its writes end on blocks again.
func TestEarlyWritesEndOnBlocksAfterRecovery(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		cfg := testConfig(backend, dir)
		take := recordReduceWrites(&cfg)
		ctx := context.Background()
		spec := ReduceSpec{Job: "j", Dataset: "d", Reduce: 0, MapCount: 2}
		s1, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		block := earlyWriteBlock(t, s1.Disks()[0])
		rp, err := s1.OpenReduce(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		pushOddSegments(t, rp, 0, 150)
		if err := s1.Close(); err != nil {
			t.Fatal(err)
		}
		before := take()
		if last := before[len(before)-1]; last.end%block == 0 {
			t.Fatalf("the write at Close [%d, %d) ends on a block: the test resumes nothing partial", last.off, last.end)
		}
		s2 := openTestStore(t, cfg)
		rp, err = s2.OpenReduce(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		pushOddSegments(t, rp, 1, 150)
		if _, err := s2.FinalizeReduce(ctx, "j", "d", 0); err != nil {
			t.Fatal(err)
		}
		after := take()
		if first := after[0]; first.off%block != 0 {
			t.Fatalf("the first write after recovery [%d, %d) starts inside a block", first.off, first.end)
		}
		checkWritesEndOnBlocks(t, after, block)
		checkOddSegments(t, s2, dir, 2, 150)
	})
}
