package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/sluice-shuffle/sluice/layout"
)

// writeMap writes and commits a small MapPartition.
func writeMap(t testing.TB, s *Store, job, ds string, m, a uint32) MapResult {
	t.Helper()
	ctx := context.Background()
	w, err := s.CreateMap(ctx, MapSpec{Job: job, Dataset: ds, Map: m, Attempt: a, Subpartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.StartRegion(false); err != nil {
		t.Fatal(err)
	}
	for sub := uint32(0); sub < 4; sub++ {
		if err := reserveWrite(ctx, w, storedBuffer(sub, payload(5000, m, a, sub))); err != nil {
			t.Fatal(err)
		}
	}
	res, err := w.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func checkMapReadable(t testing.TB, s *Store, job, ds string, m, a uint32) {
	t.Helper()
	r, err := s.OpenMap(job, ds, m, a)
	if err != nil {
		t.Fatalf("OpenMap %s/%s/%d/%d: %v", job, ds, m, a, err)
	}
	defer r.Close()
	for sub := uint32(0); sub < 4; sub++ {
		if got := readAllExtents(t, r, sub, sub+1); !bytes.Equal(got, storedBuffer(sub, payload(5000, m, a, sub))) {
			t.Fatalf("map %d subpartition %d: wrong bytes", m, sub)
		}
	}
}

func TestRecoveryStates(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		cfg := testConfig(backend, dir)
		cfg.DeleteFilesPerSecond = 1e-3 // a release stays pending until Close
		ctx := context.Background()
		s, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		worker := s.WorkerID()
		path := func(rel string) string { return filepath.Join(dir, rel) }
		// Committed map partitions: one stays, one loses its file, one is
		// cut short, one's footer is damaged (found on first open).
		writeMap(t, s, "j", "keep", 0, 0)
		writeMap(t, s, "j", "keep", 1, 0)
		writeMap(t, s, "j", "keep", 2, 0)
		writeMap(t, s, "j", "keep", 3, 0)
		// An uncommitted map partition: its writer is open at the "crash".
		w, err := s.CreateMap(ctx, MapSpec{Job: "j", Dataset: "keep", Map: 9, Attempt: 0, Subpartitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		_ = w.StartRegion(false)
		_ = w.Write(ctx, storedBuffer(0, payload(100000, 9)))
		// An open ReducePartition with two committed producers; the second
		// one's last segment will be torn off.
		rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "j", Dataset: "keep", Reduce: 0, MapCount: 3})
		if err != nil {
			t.Fatal(err)
		}
		for m := uint32(0); m < 2; m++ {
			if err := pushAll(ctx, rp, m, 0, 4, 0); err != nil {
				t.Fatal(err)
			}
			if err := rp.Commit(ctx, m, 0, 4); err != nil {
				t.Fatal(err)
			}
		}
		// Map 2 pushes but does not commit: it may continue after recovery.
		if err := pushAll(ctx, rp, 2, 0, 2, 0); err != nil {
			t.Fatal(err)
		}
		rp.mu.Lock()
		reduceLen := rp.s.length
		rp.mu.Unlock()
		lastSeg := int64(len(testSegment(2, 0, 1, 0)) + len(testSegment(2, 0, 0, 0)) + len(testSegment(1, 0, 3, 0)))
		// A finalized ReducePartition.
		rf, err := s.OpenReduce(ctx, ReduceSpec{Job: "j", Dataset: "keep", Reduce: 1, MapCount: 3})
		if err != nil {
			t.Fatal(err)
		}
		if err := pushAll(ctx, rf, 0, 0, 3, 1); err != nil {
			t.Fatal(err)
		}
		if err := rf.Commit(ctx, 0, 0, 3); err != nil {
			t.Fatal(err)
		}
		if _, err := rf.Finalize(ctx); err != nil {
			t.Fatal(err)
		}
		// A released dataset whose deletion is still pending.
		writeMap(t, s, "j", "gone", 0, 0)
		if err := s.Release(ctx, "j", "gone"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.OpenMap("j", "gone", 0, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("released partition served: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		// The "crash" damage.
		os.Remove(path(layout.MapPartitionPath([]byte("j"), []byte("keep"), 1, 0)))
		if err := os.Truncate(path(layout.MapPartitionPath([]byte("j"), []byte("keep"), 2, 0)), 1000); err != nil {
			t.Fatal(err)
		}
		m3 := path(layout.MapPartitionPath([]byte("j"), []byte("keep"), 3, 0))
		b, _ := os.ReadFile(m3)
		b[len(b)-10] ^= 1
		if err := os.WriteFile(m3, b, 0o644); err != nil {
			t.Fatal(err)
		}
		leftover := path(layout.MapPartitionPath([]byte("j"), []byte("keep"), 9, 0))
		if err := os.WriteFile(leftover, []byte("half a partition"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path(layout.ReducePartitionPath([]byte("j"), []byte("keep"), 0)), reduceLen-lastSeg+5); err != nil {
			t.Fatal(err)
		}
		foreign := path("data/not-base32!/x")
		os.MkdirAll(filepath.Dir(foreign), 0o755)
		os.WriteFile(foreign, nil, 0o644)

		var events []Event
		var evMu sync.Mutex
		cfg.OnEvent = func(e Event) { evMu.Lock(); events = append(events, e); evMu.Unlock() }
		s = openTestStore(t, cfg)
		rep := s.Recovery()
		if s.WorkerID() != worker {
			t.Fatalf("worker id %v, was %v", s.WorkerID(), worker)
		}
		lost := map[string]LostPartition{}
		for _, l := range rep.Lost {
			lost[l.Partition.String()] = l
		}
		for _, m := range []uint32{1, 2} {
			if _, ok := lost[PartitionRef{Kind: KindMap, Job: "j", Dataset: "keep", Index: m}.String()]; !ok {
				t.Errorf("map %d not reported lost: %+v", m, rep.Lost)
			}
		}
		if len(rep.Lost) != 2 {
			t.Errorf("lost %+v", rep.Lost)
		}
		if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("uncommitted leftover still there: %v", err)
		}
		if _, err := os.Stat(path(layout.DatasetDir([]byte("j"), []byte("gone")))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("released dataset still there: %v", err)
		}
		if _, err := os.Stat(foreign); err != nil {
			t.Errorf("a file the engine does not name was touched: %v", err)
		}
		if d := rep.Disks[0]; d.Removed < 2 || d.Maps != 2 || d.ReducesOpen != 1 || d.ReducesFinalized != 1 {
			t.Errorf("disk report %+v", d)
		}
		var open *RecoveredPartition
		for i, p := range rep.Partitions {
			if p.Partition.Kind == KindReduce && p.Partition.Index == 0 {
				open = &rep.Partitions[i]
			}
		}
		if open == nil || !slices.Equal(open.LostMaps, []uint32{1}) || len(open.Committed) != 1 || open.Committed[0].Map != 0 {
			t.Fatalf("open ReducePartition recovered as %+v", open)
		}
		checkMapReadable(t, s, "j", "keep", 0, 0)
		if _, err := s.OpenMap("j", "keep", 3, 0); !errors.Is(err, layout.ErrCorrupt) {
			t.Fatalf("damaged footer: %v, want ErrCorrupt", err)
		}
		// The open partition continues: map 1 reruns as attempt 1 (its
		// lost attempt 0 is closed), map 2 continues its attempt 0 where
		// the file ends.
		rp, err = s.OpenReduce(ctx, ReduceSpec{Job: "j", Dataset: "keep", Reduce: 0, MapCount: 3})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rp.Push(ctx, testSegment(1, 0, 3, 0)); !errors.Is(err, ErrAttemptClosed) {
			t.Fatalf("push of a lost attempt: %v", err)
		}
		if err := pushAll(ctx, rp, 1, 1, 4, 0); err != nil {
			t.Fatal(err)
		}
		if err := rp.Commit(ctx, 1, 1, 4); err != nil {
			t.Fatal(err)
		}
		if err := pushAll(ctx, rp, 2, 0, 3, 0); err != nil {
			t.Fatal(err)
		}
		if err := rp.Commit(ctx, 2, 0, 3); err != nil {
			t.Fatal(err)
		}
		if _, err := rp.Finalize(ctx); err != nil {
			t.Fatal(err)
		}
		got := readReduce(t, s, "j", "keep", 0, 4096)
		want := map[[3]uint32][]byte{}
		for _, ma := range [][3]uint32{{0, 0, 4}, {1, 1, 4}, {2, 0, 3}} {
			for seq := uint32(0); seq < ma[2]; seq++ {
				want[[3]uint32{ma[0], ma[1], seq}] = testSegment(ma[0], ma[1], seq, 0)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("served %d segments, want %d", len(got), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Fatalf("segment %v: wrong bytes", k)
			}
		}
		if g := readReduce(t, s, "j", "keep", 1, 100); len(g) != 3 {
			t.Fatalf("finalized partition serves %d segments", len(g))
		}
		// A second restart finds exactly what the first left.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := openTestStore(t, testConfig(backend, dir))
		if r := s2.Recovery(); len(r.Lost) != 0 || r.Disks[0].Removed != 0 || r.Disks[0].Maps != 1 || r.Disks[0].ReducesFinalized != 2 {
			t.Fatalf("second recovery: %+v lost %+v", r.Disks[0], r.Lost)
		}
		checkMapReadable(t, s2, "j", "keep", 0, 0)
		if g := readReduce(t, s2, "j", "keep", 0, 1<<20); len(g) != len(want) {
			t.Fatalf("after the second restart: %d segments", len(g))
		}
	})
}

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("", dir)
	s := openTestStore(t, cfg)
	writeMap(t, s, "q", "d", 0, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rel := layout.MapPartitionPath([]byte("q"), []byte("d"), 5, 0)
	if err := os.WriteFile(filepath.Join(dir, rel), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Quarantine = true
	s = openTestStore(t, cfg)
	if q := s.Recovery().Disks[0].Quarantined; q != 1 {
		t.Fatalf("quarantined %d", q)
	}
	if b, err := os.ReadFile(filepath.Join(dir, quarantineDir, rel)); err != nil || string(b) != "junk" {
		t.Fatalf("quarantined file: %q, %v", b, err)
	}
	checkMapReadable(t, s, "q", "d", 0, 0)
}

func TestWorkerIdentity(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	s := openTestStore(t, testConfig("", a, b))
	worker := s.WorkerID()
	ids := []layout.ID{s.Disks()[0].ID(), s.Disks()[1].ID()}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A disk added later adopts the worker id; the others keep theirs.
	s = openTestStore(t, testConfig("", a, b, c))
	if s.WorkerID() != worker || s.Disks()[0].ID() != ids[0] || s.Disks()[1].ID() != ids[1] {
		t.Fatalf("identities changed")
	}
	if !s.Recovery().Disks[2].New {
		t.Fatal("the added disk is not reported new")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A disk of another worker: refused, naming the directories.
	other := t.TempDir()
	s2 := openTestStore(t, testConfig("", other))
	s2.Close()
	_, err := Open(context.Background(), testConfig("", a, other))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(other)) || !bytes.Contains([]byte(err.Error()), []byte(a)) {
		t.Fatalf("disks of two workers: %v", err)
	}
	// A locked disk (a running worker) is refused.
	s3 := openTestStore(t, testConfig("", a))
	if _, err := Open(context.Background(), testConfig("", a)); err == nil {
		t.Fatal("a disk locked by another store was opened")
	}
	s3.Close()
	// A directory with data but no identity is not adopted.
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, layout.DataDir), 0o755)
	if _, err := Open(context.Background(), testConfig("", bad)); err == nil {
		t.Fatal("a directory with data and no identity was adopted")
	}
}

// TestRecoveryRecreatesHeaderless: a ReducePartition's file is created in
// the background and its header goes out with its first data, so a
// producer commit can be durable while the file is empty or missing.
// Recovery recreates such a partition from its commit records (format
// 1.1), reports its committed producers lost, and the partition takes
// their reruns.
func TestRecoveryRecreatesHeaderless(t *testing.T) {
	for _, damage := range []string{"empty", "missing", "zeros"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			s := openTestStore(t, testConfig("", dir))
			rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "j", Dataset: "d", Reduce: 4, MapCount: 2, Codec: layout.CodecLZ4})
			if err != nil {
				t.Fatal(err)
			}
			if err := pushAll(ctx, rp, 0, 0, 3, 4); err != nil {
				t.Fatal(err)
			}
			if err := rp.Commit(ctx, 0, 0, 3); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, layout.ReducePartitionPath([]byte("j"), []byte("d"), 4))
			switch damage {
			case "empty":
				err = os.Truncate(path, 0)
			case "missing":
				err = os.Remove(path)
			case "zeros":
				err = os.WriteFile(path, make([]byte, 8192), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}

			s = openTestStore(t, testConfig("", dir))
			rep := s.Recovery()
			if len(rep.Lost) != 0 || len(rep.Partitions) != 1 {
				t.Fatalf("recovery %+v", rep)
			}
			p := rep.Partitions[0]
			if p.Partition.Index != 4 || p.Finalized || len(p.Committed) != 0 || !slices.Equal(p.LostMaps, []uint32{0}) {
				t.Fatalf("recovered %+v, want an open partition that lost map 0", p)
			}
			rp, err = s.Reduce("j", "d", 4)
			if err != nil {
				t.Fatal(err)
			}
			// Map 0 reruns as attempt 1; map 1 pushes for the first time.
			for m, a := range []uint32{1, 0} {
				if err := pushAll(ctx, rp, uint32(m), a, 2, 4); err != nil {
					t.Fatal(err)
				}
				if err := rp.Commit(ctx, uint32(m), a, 2); err != nil {
					t.Fatal(err)
				}
			}
			res, err := rp.Finalize(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Committed) != 2 || res.Committed[0].Map != 0 || res.Committed[0].Attempt != 1 || res.Committed[1].Map != 1 {
				t.Fatalf("finalized with %+v, want map 0 attempt 1 and map 1 attempt 0", res.Committed)
			}
			// Exactly the reruns' segments are served, none of the lost ones.
			got := readReduce(t, s, "j", "d", 4, 777)
			if len(got) != 4 {
				t.Fatalf("served %d segments, want 4", len(got))
			}
			for k, seg := range got {
				if k[1] != map[uint32]uint32{0: 1, 1: 0}[k[0]] || !bytes.Equal(seg, testSegment(k[0], k[1], k[2], 4)) {
					t.Fatalf("served segment %v differs", k)
				}
			}
			if sum := verifyReduceFile(t, path); sum.Header.MapCount != 2 || sum.Header.Codec != layout.CodecLZ4 {
				t.Fatalf("recreated header %+v", sum.Header)
			}
		})
	}
}
