package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
)

// The crash test: a child process (this test binary, re-executed) writes
// MapPartitions and ReducePartitions (pushes, producer commits, finalizes)
// and prints every acknowledged commit; the parent kills it with SIGKILL at
// a random moment, recovers the disk and checks that every acknowledged
// partition reads back byte-identical and verifies, that nothing
// uncommitted is served, that no leftover file remains, and that every
// acknowledged producer commit of an unfinalized ReducePartition either
// survived or is reported lost (and that what is served is right either
// way). Disks are reused for a few kills in a row, so that some kills land
// during the recovery of the previous one.

var crashIterations = flag.Int("crash.iterations", 200, "iterations of TestCrash")

const (
	crashEnvDir     = "SLUICE_ENGINE_CRASH_DIR"
	crashEnvBackend = "SLUICE_ENGINE_CRASH_BACKEND"
	crashEnvIter    = "SLUICE_ENGINE_CRASH_ITER"
	crashSubs       = 8
	crashReduces    = 4
	crashProducers  = 5
	crashChain      = 4 // kills per disk before a fresh one
)

func crashConfig(backend, dir string) Config {
	cfg := testConfig(backend, dir)
	cfg.BufferBytes = 16 << 10 // partitions of a few buffers each
	cfg.PoolBytes = 4 << 20
	cfg.WriteBytesPerDisk = 48 * int64(cfg.BufferBytes)
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

// crashMapPlan is the deterministic content of MapPartition (iter, m).
func crashMapPlan(iter, m uint32) (regions [][]layout.BufferHeader, payloads [][][]byte) {
	rng := rand.New(rand.NewPCG(uint64(iter), uint64(m)))
	nr := 1 + rng.IntN(3)
	for ri := 0; ri < nr; ri++ {
		nb := 1 + rng.IntN(12)
		var hs []layout.BufferHeader
		var ps [][]byte
		sub := uint32(0)
		for bi := 0; bi < nb && sub < crashSubs; bi++ {
			p := payload(1+rng.IntN(12000), iter, m, uint32(ri), uint32(bi))
			hs = append(hs, layout.BufferHeader{Subpartition: sub})
			ps = append(ps, p)
			sub += uint32(rng.IntN(2))
		}
		regions, payloads = append(regions, hs), append(payloads, ps)
	}
	return regions, payloads
}

// crashMapBytes is what each subpartition of (iter, m) reads.
func crashMapBytes(iter, m uint32) [crashSubs][]byte {
	regions, payloads := crashMapPlan(iter, m)
	var out [crashSubs][]byte
	for ri := range regions {
		for bi, h := range regions[ri] {
			out[h.Subpartition] = append(out[h.Subpartition], storedBuffer(h.Subpartition, payloads[ri][bi])...)
		}
	}
	return out
}

func crashSegment(ds string, m, a, seq, r uint32) []byte {
	n := 1 + int((m*7919+seq*104729+r*31+a*17)%9000)
	return segmentBytes(m, a, seq, payload(n, m, a, seq, r, uint32(len(ds)), uint32(ds[len(ds)-1])))
}

// crashSegments is how many segments producer m pushes to reduce r.
func crashSegments(m, r uint32) uint32 { return (m*3 + r) % 6 }

func TestCrash(t *testing.T) {
	if os.Getenv(crashEnvDir) != "" {
		crashChild()
		return
	}
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d iterations", seed, *crashIterations)
	rng := rand.New(rand.NewPCG(seed, 7))
	var st crashState
	var dir string
	for it := 0; it < *crashIterations; it++ {
		if it%crashChain == 0 {
			dir = t.TempDir()
			st = crashState{}
		}
		backend := testBackends[(it/crashChain)%len(testBackends)]
		delay := time.Duration(5+rng.IntN(300)) * time.Millisecond
		t0 := time.Now()
		out := runCrashChild(t, exe, dir, backend, it, delay)
		t1 := time.Now()
		st.absorb(t, out, uint32(it))
		st.check(t, backend, dir, it)
		if testing.Verbose() {
			t.Logf("iteration %d: %s, kill after %v, child %v, %d acknowledgements, check %v", it, backend, delay, t1.Sub(t0).Round(time.Millisecond), bytes.Count(out, []byte("\n")), time.Since(t1).Round(time.Millisecond))
		}
	}
}

// runCrashChild runs one child and kills it after delay; it returns what
// the child printed.
func runCrashChild(t *testing.T, exe, dir, backend string, it int, delay time.Duration) []byte {
	cmd := exec.Command(exe, "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvBackend+"="+backend, crashEnvIter+"="+strconv.Itoa(it))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("iteration %d: the child was not killed (%v): %s\nstdout:\n%s", it, err, errb.String(), out.String())
	}
	if strings.Contains(errb.String(), "FAIL") || strings.Contains(errb.String(), "panic") {
		t.Fatalf("iteration %d: child failed:\n%s", it, errb.String())
	}
	return out.Bytes()
}

// crashChild is the child's workload. It runs until killed.
func crashChild() {
	dir, backend := os.Getenv(crashEnvDir), os.Getenv(crashEnvBackend)
	iter, _ := strconv.Atoi(os.Getenv(crashEnvIter))
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "FAIL: crash child: %v\n", err)
		os.Exit(3)
	}
	ctx := context.Background()
	s, err := Open(ctx, crashConfig(backend, dir))
	if err != nil {
		fail(err)
	}
	// Finalize what earlier children left open, like the control plane
	// would once their producers are done (the parent checks them).
	var wg sync.WaitGroup
	// MapPartitions: three writers, each a sequence of partitions; every
	// fifth aborted.
	for g := uint32(0); g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint32(0); ; i++ {
				m := g*100000 + i
				w, err := s.CreateMap(ctx, MapSpec{Job: "c", Dataset: "m" + strconv.Itoa(iter), Map: m, Subpartitions: crashSubs})
				if err != nil {
					fail(err)
				}
				regions, payloads := crashMapPlan(uint32(iter), m)
				for ri := range regions {
					if err := w.StartRegion(false); err != nil {
						fail(err)
					}
					for bi, h := range regions[ri] {
						stored := storedBuffer(h.Subpartition, payloads[ri][bi])
						if len(stored) <= w.MaxReserve() && bi%2 == 0 {
							err = reserveWrite(ctx, w, stored)
						} else {
							err = w.Write(ctx, stored)
						}
						if err != nil {
							fail(err)
						}
					}
					if err := w.FinishRegion(); err != nil {
						fail(err)
					}
				}
				if i%5 == 4 {
					if err := w.Abort(); err != nil {
						fail(err)
					}
					continue
				}
				res, err := w.Finish(ctx)
				if err != nil {
					fail(err)
				}
				fmt.Fprintf(os.Stdout, "M %d %d %d %d\n", iter, m, res.Length, res.FooterCRC)
			}
		}()
	}
	// ReducePartitions: rounds of a dataset each; producers push to every
	// reduce partition concurrently and commit; producer 4's attempt 0 is
	// aborted halfway and rerun as attempt 1; then the round is finalized.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for round := 0; ; round++ {
			ds := fmt.Sprintf("r%d-%d", iter, round)
			var pw sync.WaitGroup
			for m := uint32(0); m < crashProducers; m++ {
				pw.Add(1)
				go func() {
					defer pw.Done()
					for r := uint32(0); r < crashReduces; r++ {
						rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "c", Dataset: ds, Reduce: r, MapCount: crashProducers})
						if err != nil {
							fail(err)
						}
						a := uint32(0)
						if m == crashProducers-1 {
							for seq := uint32(0); seq < crashSegments(m, r)/2; seq++ {
								if _, err := rp.Push(ctx, crashSegment(ds, m, 0, seq, r)); err != nil {
									fail(err)
								}
							}
							if err := rp.Abort(m, 0); err != nil {
								fail(err)
							}
							a = 1
						}
						n := crashSegments(m, r)
						for seq := uint32(0); seq < n; seq++ {
							seg := crashSegment(ds, m, a, seq, r)
							var err error
							if len(seg) <= rp.MaxReserve() && seq%2 == 1 {
								_, err = pushReserve(ctx, rp, seg)
							} else {
								_, err = rp.Push(ctx, seg)
							}
							if err != nil {
								fail(err)
							}
							if seq == 1 { // a retry
								if dup, err := rp.Push(ctx, seg); err != nil || !dup {
									fail(fmt.Errorf("retry: %v %v", dup, err))
								}
							}
						}
						if err := rp.Commit(ctx, m, a, n); err != nil {
							fail(err)
						}
						fmt.Fprintf(os.Stdout, "C %s %d %d %d %d\n", ds, r, m, a, n)
					}
				}()
			}
			pw.Wait()
			for r := uint32(0); r < crashReduces; r++ {
				res, err := s.FinalizeReduce(ctx, "c", ds, r)
				if err != nil {
					fail(err)
				}
				fmt.Fprintf(os.Stdout, "F %s %d %d %d\n", ds, r, res.Length, res.FooterCRC)
			}
		}
	}()
	go func() {
		time.Sleep(30 * time.Second)
		fail(errors.New("not killed within 30s"))
	}()
	wg.Wait()
}

// crashState is what the children of one disk acknowledged.
type crashState struct {
	maps      map[[2]uint32]MapResult // (iter, map) -> commit
	commits   map[string]map[uint32]map[uint32][2]uint32
	finalized map[string]map[uint32]ReduceResult
}

func (st *crashState) absorb(t *testing.T, out []byte, iter uint32) {
	if st.maps == nil {
		st.maps = map[[2]uint32]MapResult{}
		st.commits = map[string]map[uint32]map[uint32][2]uint32{}
		st.finalized = map[string]map[uint32]ReduceResult{}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		n := func(i int) uint64 {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				t.Fatalf("child line %q: %v", sc.Text(), err)
			}
			return v
		}
		switch f[0] {
		case "M":
			st.maps[[2]uint32{uint32(n(1)), uint32(n(2))}] = MapResult{Length: int64(n(3)), FooterCRC: uint32(n(4))}
		case "C":
			ds, r := f[1], uint32(n(2))
			if st.commits[ds] == nil {
				st.commits[ds] = map[uint32]map[uint32][2]uint32{}
			}
			if st.commits[ds][r] == nil {
				st.commits[ds][r] = map[uint32][2]uint32{}
			}
			st.commits[ds][r][uint32(n(3))] = [2]uint32{uint32(n(4)), uint32(n(5))}
		case "F":
			ds := f[1]
			if st.finalized[ds] == nil {
				st.finalized[ds] = map[uint32]ReduceResult{}
			}
			st.finalized[ds][uint32(n(2))] = ReduceResult{Length: int64(n(3)), FooterCRC: uint32(n(4))}
		default:
			t.Fatalf("child line %q", sc.Text())
		}
	}
}

// check recovers the disk and checks it against what was acknowledged;
// it finalizes the ReducePartitions left open (their producers are done)
// and checks what they serve.
func (st *crashState) check(t *testing.T, backend, dir string, it int) {
	ctx := context.Background()
	s, err := Open(ctx, crashConfig(backend, dir))
	if err != nil {
		t.Fatalf("iteration %d: recovery: %v", it, err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatalf("iteration %d: close: %v", it, err)
		}
	}()
	rep := s.Recovery()
	fatal := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("iteration %d (%s, %s): %s", it, backend, dir, fmt.Sprintf(format, args...))
	}
	if rep.Disks[0].Err != nil {
		fatal("disk failed at recovery: %v", rep.Disks[0].Err)
	}
	if len(rep.Lost) != 0 {
		fatal("lost partitions: %+v", rep.Lost)
	}
	recovered := map[string]RecoveredPartition{}
	for _, p := range rep.Partitions {
		recovered[p.Partition.Path()] = p
	}
	// Every acknowledged MapPartition is there and byte-identical; every
	// recovered one (acknowledged or not: the record may have made it
	// without the ack) is right.
	for k, res := range st.maps {
		ref := PartitionRef{Kind: KindMap, Job: "c", Dataset: "m" + strconv.Itoa(int(k[0])), Index: k[1]}
		p, ok := recovered[ref.Path()]
		if !ok || p.Bytes != res.Length {
			fatal("acknowledged %v (%d bytes) recovered as %+v", ref, res.Length, p)
		}
	}
	for _, p := range rep.Partitions {
		path := filepath.Join(dir, p.Partition.Path())
		if p.Partition.Kind == KindMap {
			iter, _ := strconv.Atoi(strings.TrimPrefix(p.Partition.Dataset, "m"))
			r, err := s.OpenMap(p.Partition.Job, p.Partition.Dataset, p.Partition.Index, 0)
			if err != nil {
				fatal("open %v: %v", p.Partition, err)
			}
			if res, acked := st.maps[[2]uint32{uint32(iter), p.Partition.Index}]; acked && r.Partition().Footer.CRC != res.FooterCRC {
				fatal("%v: footer CRC %#x, acknowledged %#x", p.Partition, r.Partition().Footer.CRC, res.FooterCRC)
			}
			want := crashMapBytes(uint32(iter), p.Partition.Index)
			for sub := uint32(0); sub < crashSubs; sub++ {
				if got := readAllExtents(t, r, sub, sub+1); !bytes.Equal(got, want[sub]) {
					fatal("%v subpartition %d: %d bytes differ from what was written", p.Partition, sub, len(got))
				}
			}
			r.Close()
			verifyMapFile(t, path)
			continue
		}
		ds, rix := p.Partition.Dataset, p.Partition.Index
		acked := st.commits[ds][rix]
		if fin, ok := st.finalized[ds][rix]; ok && (!p.Finalized || p.Bytes != fin.Length) {
			fatal("acknowledged finalize of %v recovered as %+v", p.Partition, p)
		}
		if !p.Finalized {
			// Every acknowledged commit survived or its map is reported lost.
			have := map[uint32]layout.AttemptCommit{}
			for _, c := range p.Committed {
				have[c.Map] = c
			}
			lost := map[uint32]bool{}
			for _, m := range p.LostMaps {
				lost[m] = true
			}
			for m, an := range acked {
				if c, ok := have[m]; (!ok || c.Attempt != an[0] || c.Segments != an[1]) && !lost[m] {
					fatal("%v: acknowledged commit of map %d %v neither survived (%+v) nor was reported lost (%v)", p.Partition, m, an, p.Committed, p.LostMaps)
				}
			}
			res, err := s.FinalizeReduce(ctx, "c", ds, rix)
			if err != nil {
				fatal("finalize %v: %v", p.Partition, err)
			}
			// From now on the partition is what this finalize says: the
			// lost producers would rerun elsewhere.
			for m := range lost {
				delete(acked, m)
			}
			if st.finalized[ds] == nil {
				st.finalized[ds] = map[uint32]ReduceResult{}
			}
			st.finalized[ds][rix] = res
		}
		rr, err := s.OpenReduceReader("c", ds, rix)
		if err != nil {
			fatal("open %v: %v", p.Partition, err)
		}
		committed := rr.Committed()
		rr.Close()
		if p.Finalized {
			// Finalized after all its commits: every acknowledged one is in.
			for m, an := range acked {
				found := false
				for _, c := range committed {
					found = found || (c.Map == m && c.Attempt == an[0] && c.Segments == an[1])
				}
				if !found {
					fatal("%v: acknowledged commit of map %d %v missing from the attempt table %+v", p.Partition, m, an, committed)
				}
			}
		}
		got := readReduce(t, s, "c", ds, rix, 8192)
		want := 0
		for _, c := range committed {
			for seq := uint32(0); seq < c.Segments; seq++ {
				want++
				if !bytes.Equal(got[[3]uint32{c.Map, c.Attempt, seq}], crashSegment(ds, c.Map, c.Attempt, seq, rix)) {
					fatal("%v: map %d attempt %d seq %d served wrong", p.Partition, c.Map, c.Attempt, seq)
				}
			}
		}
		if len(got) != want {
			fatal("%v: %d segments served, %d committed", p.Partition, len(got), want)
		}
		verifyReduceFile(t, filepath.Join(dir, p.Partition.Path()))
	}
	// Acknowledged finalizes of partitions not recovered at all.
	for ds, rs := range st.finalized {
		for r := range rs {
			if _, ok := recovered[layout.ReducePartitionPath([]byte("c"), []byte(ds), r)]; !ok {
				fatal("acknowledged finalize of %s/%d not recovered", ds, r)
			}
		}
	}
	for ds, rs := range st.commits {
		for r, ms := range rs {
			if _, ok := recovered[layout.ReducePartitionPath([]byte("c"), []byte(ds), r)]; !ok && len(ms) > 0 {
				fatal("ReducePartition %s/%d with acknowledged commits %v vanished", ds, r, ms)
			}
		}
	}
	// No leftover: every file under data/ is a recovered partition.
	err = filepath.WalkDir(filepath.Join(dir, layout.DataDir), func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if _, ok := recovered[filepath.ToSlash(rel)]; !ok {
			return fmt.Errorf("leftover file %s", rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fatal("%v", err)
	}
	// The commit log is a compacted one of this generation.
	if _, err := os.Stat(filepath.Join(dir, layout.CommitLogFile+logTempSuffix)); !errors.Is(err, os.ErrNotExist) {
		fatal("temporary commit log left behind: %v", err)
	}
	_ = diskio.BackendAuto
}
