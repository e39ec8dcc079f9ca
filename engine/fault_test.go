package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs/blockdevice"
	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
)

// faultyStore opens a store whose disks' IOs are Faulty wrappers.
func faultyStore(t *testing.T, backend string, dirs ...string) (*Store, map[string]*diskio.Faulty, *eventLog) {
	cfg := testConfig(backend, dirs...)
	faults := map[string]*diskio.Faulty{}
	var mu sync.Mutex
	cfg.WrapIO = func(dir string, io diskio.IO) diskio.IO {
		f := diskio.NewFaulty(io)
		mu.Lock()
		faults[dir] = f
		mu.Unlock()
		return f
	}
	ev := &eventLog{}
	cfg.OnEvent = ev.add
	// Place on the first disk that can take the partition, so that a test
	// knows where its partitions go.
	cfg.Placement = func(_ PlacementRequest, c []DiskStatus) int { return 0 }
	s := openTestStore(t, cfg)
	return s, faults, ev
}

type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

// wait waits for an event of kind k.
func (l *eventLog) wait(t testing.TB, k EventKind) Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, e := range l.ev {
			if e.Kind == k {
				l.mu.Unlock()
				return e
			}
		}
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %v event", k)
	return Event{}
}

// writeBig writes a MapPartition of n buffers of 20 KB and returns the
// first error.
func writeBig(ctx context.Context, s *Store, ds string, m uint32, n int) (MapResult, error) {
	w, err := s.CreateMap(ctx, MapSpec{Job: "f", Dataset: ds, Map: m, Subpartitions: 4})
	if err != nil {
		return MapResult{}, err
	}
	if err := w.StartRegion(false); err != nil {
		return MapResult{}, err
	}
	for i := 0; i < n; i++ {
		if err := reserveWrite(ctx, w, storedBuffer(uint32(i*4/n), payload(20000, m, uint32(i)))); err != nil {
			return MapResult{}, err
		}
	}
	return w.Finish(ctx)
}

func TestFaultENOSPC(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		s, faults, ev := faultyStore(t, backend, dir)
		ctx := context.Background()
		remove := faults[s.Disks()[0].Path()].Inject(diskio.Rule{Op: diskio.OpWrite, Path: "map-*", After: 3, Err: syscall.ENOSPC})
		_, err := writeBig(ctx, s, "full", 0, 40)
		if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write on a full disk: %v, want ErrDiskFull", err)
		}
		if _, err := os.Stat(filepath.Join(dir, layout.MapPartitionPath([]byte("f"), []byte("full"), 0, 0))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the aborted partition's file is still there: %v", err)
		}
		if st := s.Disks()[0].State(); st != DiskFull {
			t.Fatalf("disk state %v", st)
		}
		ev.wait(t, EventDiskFull)
		if _, err := s.CreateMap(ctx, MapSpec{Job: "f", Dataset: "full", Map: 1, Subpartitions: 4}); !errors.Is(err, ErrNoDisk) {
			t.Fatalf("CreateMap on a full disk: %v", err)
		}
		// Space comes back (the rule goes): the health check sees free space
		// above the reserve.
		remove()
		s.CheckHealth(ctx)
		if st := s.Disks()[0].State(); st != DiskHealthy {
			t.Fatalf("disk state %v after space came back", st)
		}
		ev.wait(t, EventDiskRecovered)
		if _, err := writeBig(ctx, s, "full", 2, 10); err != nil {
			t.Fatal(err)
		}
		if in := s.Pool().Stats().InUse; in != 0 {
			t.Fatalf("%d buffers leaked", in)
		}
	})
}

func TestFaultENOSPCReduce(t *testing.T) {
	s, faults, ev := faultyStore(t, "", t.TempDir())
	rp, _ := loseToFullDisk(t, context.Background(), s, faults[s.Disks()[0].Path()])
	e := ev.wait(t, EventPartitionLost)
	if e.Partition != rp.Ref() || len(e.LostMaps) != 1 || e.LostMaps[0] != 0 {
		t.Fatalf("lost event %+v", e)
	}
	if _, err := s.Reduce("f", "r", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the failed partition is still found: %v", err)
	}
}

// loseToFullDisk opens ReducePartition f/r/0 of two maps, commits map 0
// in it, then loses it to ENOSPC from fault while map 1 pushes. The rule
// stays until remove.
func loseToFullDisk(t *testing.T, ctx context.Context, s *Store, fault *diskio.Faulty) (rp *ReducePartition, remove func()) {
	t.Helper()
	rp, err := s.OpenReduce(ctx, lostSpec)
	if err != nil {
		t.Fatal(err)
	}
	if err := pushAll(ctx, rp, 0, 0, 5, 0); err != nil {
		t.Fatal(err)
	}
	if err := rp.Commit(ctx, 0, 0, 5); err != nil {
		t.Fatal(err)
	}
	remove = fault.Inject(diskio.Rule{Op: diskio.OpWrite, Path: "reduce-*", Err: syscall.ENOSPC})
	err = pushAll(ctx, rp, 1, 0, 40, 0)
	if err == nil {
		_, err = rp.Finalize(ctx)
	}
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("push to a full disk: %v", err)
	}
	return rp, remove
}

// lostSpec is the partition loseToFullDisk loses.
var lostSpec = ReduceSpec{Job: "f", Dataset: "r", Reduce: 0, MapCount: 2}

func TestFaultEIO(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		a, b := t.TempDir(), t.TempDir()
		s, faults, ev := faultyStore(t, backend, a, b)
		ctx := context.Background()
		if _, err := writeBig(ctx, s, "eio", 0, 5); err != nil {
			t.Fatal(err)
		}
		rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "f", Dataset: "eio", Reduce: 3, MapCount: 1})
		if err != nil {
			t.Fatal(err)
		}
		da := s.Disks()[0]
		faults[da.Path()].Inject(diskio.Rule{Op: diskio.OpWrite, Path: "map-*", Err: syscall.EIO})
		if _, err := writeBig(ctx, s, "eio", 1, 10); !errors.Is(err, ErrDiskFailed) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("write on a failing disk: %v", err)
		}
		if da.State() != DiskFailed {
			t.Fatalf("disk state %v", da.State())
		}
		e := ev.wait(t, EventDiskFailed)
		names := map[string]bool{}
		for _, p := range e.Lost {
			names[p.String()] = true
		}
		if !names[PartitionRef{Kind: KindMap, Job: "f", Dataset: "eio", Index: 0}.String()] || !names[rp.Ref().String()] || e.Disk != da.ID() {
			t.Fatalf("failed-disk event %+v", e)
		}
		if _, err := s.OpenMap("f", "eio", 0, 0); !errors.Is(err, ErrDiskFailed) {
			t.Fatalf("read from a failed disk: %v", err)
		}
		if _, err := rp.Push(ctx, testSegment(0, 0, 0, 3)); err == nil {
			t.Fatal("push to a partition of a failed disk succeeded")
		}
		// The other disk takes over.
		res, err := writeBig(ctx, s, "eio", 2, 10)
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenMap("f", "eio", 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Disk().Path() != s.Disks()[1].Path() || r.Partition().Footer.FileLength != res.Length {
			t.Fatalf("partition on %s", r.Disk().Path())
		}
		r.Close()
		if st := s.Stats(); st.DisksFailed != 1 || st.DisksHealthy != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestFaultSyncEIO(t *testing.T) {
	s, faults, _ := faultyStore(t, "", t.TempDir())
	faults[s.Disks()[0].Path()].Inject(diskio.Rule{Op: diskio.OpSync, Path: "map-*", Err: syscall.EIO})
	if _, err := writeBig(context.Background(), s, "sync", 0, 3); !errors.Is(err, ErrDiskFailed) {
		t.Fatalf("fdatasync EIO: %v", err)
	}
}

func TestFaultShortWriteAndLatency(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s, faults, _ := faultyStore(t, backend, t.TempDir())
		f := faults[s.Disks()[0].Path()]
		f.Inject(diskio.Rule{Op: diskio.OpWrite, Path: "map-*", After: 1, Times: 3, Short: 8192})
		f.Inject(diskio.Rule{Op: diskio.OpWrite, Path: "map-*", After: 5, Times: 5, Delay: 20 * time.Millisecond})
		faults[filepath.Join(s.Disks()[0].Path(), layout.CommitLogFile)].Inject(diskio.Rule{Op: diskio.OpSync, Path: layout.CommitLogFile, Times: 1, Delay: 30 * time.Millisecond})
		ctx := context.Background()
		res, err := writeBig(ctx, s, "short", 0, 30)
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenMap("f", "short", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var all []byte
		for sub := uint32(0); sub < 4; sub++ {
			all = append(all, readAllExtents(t, r, sub, sub+1)...)
		}
		var want []byte
		for i := 0; i < 30; i++ {
			want = append(want, storedBuffer(uint32(i*4/30), payload(20000, 0, uint32(i)))...)
		}
		if string(all) != string(want) || r.Partition().Footer.FileLength != res.Length {
			t.Fatal("the partition written through short and slow writes reads back wrong")
		}
		st := s.Stats().Disks[0]
		// A rule's hit on a write shorter than Short does not shorten it
		// (early flushes of small buffers may take one).
		if st.ShortWrites < 1 || st.ShortWrites > 3 {
			t.Fatalf("%d short writes continued, want 1 to 3", st.ShortWrites)
		}
		if h := f.Hits(); h[1] != 5 {
			t.Fatalf("fault hits %v", h)
		}
		if st.CommitLatency.Count == 0 || st.CommitLatency.Quantile(1) < 30*time.Millisecond {
			t.Fatalf("commit latency %+v", st.CommitLatency)
		}
	})
}

func TestProbeHang(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("", dir)
	var faulty *diskio.Faulty
	cfg.WrapIO = func(dir string, io diskio.IO) diskio.IO {
		if filepath.Base(dir) == layout.CommitLogFile {
			return io
		}
		faulty = diskio.NewFaulty(io)
		return faulty
	}
	cfg.ProbeTimeout = 50 * time.Millisecond
	s := openTestStore(t, cfg)
	ctx := context.Background()
	s.CheckHealth(ctx)
	if st := s.Disks()[0].State(); st != DiskHealthy {
		t.Fatalf("healthy disk probed as %v: %v", st, s.Disks()[0].Err())
	}
	faulty.Inject(diskio.Rule{Path: probeFile, Delay: 300 * time.Millisecond})
	s.CheckHealth(ctx)
	d := s.Disks()[0]
	if d.State() != DiskFailed || !errors.Is(d.Err(), ErrHung) {
		t.Fatalf("hung probe: state %v, %v", d.State(), d.Err())
	}
	// The probe's delayed requests complete before Close returns.
	time.Sleep(400 * time.Millisecond)
}

func TestProbeEIO(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("", dir)
	var faulty *diskio.Faulty
	cfg.WrapIO = func(dir string, io diskio.IO) diskio.IO {
		if filepath.Base(dir) == layout.CommitLogFile {
			return io
		}
		faulty = diskio.NewFaulty(io)
		return faulty
	}
	s := openTestStore(t, cfg)
	faulty.Inject(diskio.Rule{Op: diskio.OpRead, Path: probeFile, Err: syscall.EIO})
	s.CheckHealth(context.Background())
	if d := s.Disks()[0]; d.State() != DiskFailed || !strings.Contains(d.Err().Error(), "input/output") {
		t.Fatalf("probe EIO: %v %v", d.State(), d.Err())
	}
}

func TestHangDetector(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1000+int64(s), 0) }
	st := func(done, inflight uint64) blockdevice.IOStats {
		return blockdevice.IOStats{WriteIOs: done, IOsInProgress: inflight}
	}
	type obs struct {
		t        int
		stats    blockdevice.IOStats
		wantHang bool
	}
	cases := []struct {
		name string
		obs  []obs
	}{
		{"idle", []obs{{0, st(5, 0), false}, {60, st(5, 0), false}, {120, st(5, 0), false}}},
		{"busy and progressing", []obs{{0, st(5, 3), false}, {40, st(9, 3), false}, {80, st(20, 1), false}}},
		{"stuck", []obs{{0, st(5, 2), false}, {10, st(5, 2), false}, {31, st(5, 2), true}}},
		{"stuck then completes", []obs{{0, st(5, 2), false}, {29, st(5, 2), false}, {40, st(6, 1), false}, {69, st(6, 1), false}, {71, st(6, 1), true}}},
		{"in flight appears later", []obs{{0, st(5, 0), false}, {100, st(5, 1), false}, {129, st(5, 1), false}, {131, st(5, 1), true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hangDetector{timeout: 30 * time.Second}
			for i, o := range c.obs {
				if got := h.observe(at(o.t), o.stats); got != o.wantHang {
					t.Fatalf("observation %d (t=%ds): hang %v, want %v", i, o.t, got, o.wantHang)
				}
			}
		})
	}
}

func TestHealthReadsDiskstats(t *testing.T) {
	s := openTestStore(t, testConfig("", t.TempDir()))
	d := s.Disks()[0]
	if d.dev.Name == "" {
		t.Skip("no block device behind the test directory")
	}
	if d.health.fs == nil {
		t.Fatal("no diskstats reader for a block device")
	}
	s.CheckHealth(context.Background())
	if !d.health.hang.seen {
		t.Fatalf("device %s (%d:%d) not found in /proc/diskstats", d.dev.Name, d.dev.Major, d.dev.Minor)
	}
	if d.State() != DiskHealthy {
		t.Fatalf("state %v: %v", d.State(), d.Err())
	}
}

// TestLostReduceRerun: a ReducePartition lost to a full disk is recorded
// as released before its file goes, so that its rerun on the same disk,
// whose producers commit other attempts of the same maps, recovers at the
// next open, with the rest of the disk.
func TestLostReduceRerun(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("", dir)
	var fault *diskio.Faulty
	cfg.WrapIO = func(_ string, io diskio.IO) diskio.IO {
		if fault == nil { // the disk's data IO comes first, then its log's
			fault = diskio.NewFaulty(io)
			return fault
		}
		return io
	}
	ctx := context.Background()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeBig(ctx, s, "m", 0, 1); err != nil {
		t.Fatal(err)
	}
	_, remove := loseToFullDisk(t, ctx, s, fault)
	remove()
	s.CheckHealth(ctx) // space is back
	// The rerun: both maps again, map 0 under another attempt.
	rp, err := s.OpenReduce(ctx, lostSpec)
	if err != nil {
		t.Fatal(err)
	}
	for m := range uint32(2) {
		if err := pushAll(ctx, rp, m, 1, 3, 0); err != nil {
			t.Fatal(err)
		}
		if err := rp.Commit(ctx, m, 1, 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rp.Finalize(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestStore(t, testConfig("", dir))
	if d := s.Disks()[0]; d.State() != DiskHealthy {
		t.Fatalf("disk %v after the restart: %v", d.State(), d.failedErr())
	}
	if _, err := s.OpenMap("f", "m", 0, 0); err != nil {
		t.Fatalf("the committed MapPartition after the restart: %v", err)
	}
	rr, err := s.OpenReduceReader("f", "r", 0)
	if err != nil {
		t.Fatalf("the rerun ReducePartition after the restart: %v", err)
	}
	defer rr.Close()
	if got := rr.Committed(); len(got) != 2 || got[0].Attempt != 1 || got[1].Attempt != 1 {
		t.Fatalf("committed attempts %+v, want maps 0 and 1 at attempt 1", got)
	}
}

// TestLogSyncENOSPC: a commit log whose fdatasync failed takes no more
// records, whatever the error: the disk fails, even for ENOSPC, instead of
// becoming healthy again with a log that refuses every commit.
func TestLogSyncENOSPC(t *testing.T) {
	cfg := testConfig("", t.TempDir())
	var logIO *diskio.Faulty
	data := true
	cfg.WrapIO = func(_ string, io diskio.IO) diskio.IO {
		if data { // the disk's data IO comes first, then its log's
			data = false
			return io
		}
		logIO = diskio.NewFaulty(io)
		return logIO
	}
	s := openTestStore(t, cfg)
	ctx := context.Background()
	logIO.Inject(diskio.Rule{Op: diskio.OpSync, Err: syscall.ENOSPC, Times: 1})
	if _, err := writeBig(ctx, s, "m", 0, 1); err == nil {
		t.Fatal("Finish succeeded with the log's fdatasync failing")
	}
	s.CheckHealth(ctx)
	if d := s.Disks()[0]; d.State() != DiskFailed {
		t.Fatalf("disk %v after the log's fdatasync failed with ENOSPC, want failed", d.State())
	}
	if _, err := s.CreateMap(ctx, MapSpec{Job: "f", Dataset: "m", Map: 1, Subpartitions: 1}); err == nil {
		t.Fatal("a new partition was placed on the disk whose log is broken")
	}
}

// TestDirtyDirectoryDeleted: a dataset directory marked for the next
// directory fsync and deleted before it (a file creation racing a release
// of its dataset) is passed over: the disk's commits go on.
func TestDirtyDirectoryDeleted(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, testConfig("", dir))
	ctx := context.Background()
	d := s.Disks()[0]
	d.markDirty([]string{"data/gone/ds"}) // never made, as if deleted
	for m := range uint32(2) {
		if _, err := writeBig(ctx, s, "m", m, 1); err != nil {
			t.Fatalf("commit %d after a dirty directory was deleted: %v", m, err)
		}
	}
}
