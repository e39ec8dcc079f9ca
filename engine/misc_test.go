package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
	"golang.org/x/sys/unix"
)

func TestDefaultPlacement(t *testing.T) {
	disk := func(i int, typ DiskType, pending int64, writers int, free int64) DiskStatus {
		return DiskStatus{Index: i, Type: typ, PendingBytes: pending, OpenWriters: writers, Free: free}
	}
	cases := []struct {
		name   string
		prefer DiskType
		disks  []DiskStatus
		want   int
	}{
		{"one disk", DiskUnknown, []DiskStatus{disk(0, DiskHDD, 0, 0, 1)}, 0},
		{"least pending", DiskUnknown, []DiskStatus{disk(0, DiskSSD, 5, 0, 9), disk(1, DiskSSD, 3, 9, 1)}, 1},
		{"then fewest writers", DiskUnknown, []DiskStatus{disk(0, DiskSSD, 0, 4, 9), disk(1, DiskSSD, 0, 2, 1)}, 1},
		{"then most free", DiskUnknown, []DiskStatus{disk(0, DiskSSD, 0, 0, 1), disk(1, DiskSSD, 0, 0, 9)}, 1},
		{"SSD preferred by default", DiskUnknown, []DiskStatus{disk(0, DiskHDD, 0, 0, 9), disk(1, DiskSSD, 7, 7, 1)}, 1},
		{"unknown counts as SSD", DiskUnknown, []DiskStatus{disk(0, DiskHDD, 0, 0, 9), disk(1, DiskUnknown, 7, 7, 1)}, 1},
		{"HDD asked for", DiskHDD, []DiskStatus{disk(0, DiskSSD, 0, 0, 9), disk(1, DiskHDD, 7, 7, 1), disk(2, DiskHDD, 3, 0, 1)}, 2},
		{"falls back to the other type", DiskHDD, []DiskStatus{disk(0, DiskSSD, 5, 0, 9), disk(1, DiskSSD, 1, 0, 9)}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := DefaultPlacement(PlacementRequest{Prefer: c.prefer}, c.disks); got != c.want {
				t.Fatalf("chose %d, want %d", got, c.want)
			}
		})
	}
}

// TestPlacementSkipsDisks: full, failed and short-of-space disks are never
// candidates, and the configured type decides between the rest.
func TestPlacementSkipsDisks(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	cfg := testConfig("", a, b, c)
	cfg.Dirs[0].Type, cfg.Dirs[1].Type, cfg.Dirs[2].Type = DiskHDD, DiskSSD, DiskSSD
	var seen [][]DiskStatus
	cfg.Placement = func(req PlacementRequest, cands []DiskStatus) int {
		seen = append(seen, cands)
		return DefaultPlacement(req, cands)
	}
	s := openTestStore(t, cfg)
	ctx := context.Background()
	ds := s.Disks()
	ds[1].setState(DiskFull)
	ds[2].markFailed(errors.New("test failure"))
	w, err := s.CreateMap(ctx, MapSpec{Job: "p", Dataset: "d", Subpartitions: 1, Prefer: DiskSSD})
	if err != nil {
		t.Fatal(err)
	}
	if w.Disk() != ds[0] || len(seen[0]) != 1 {
		t.Fatalf("placed on %s among %+v", w.Disk().Path(), seen[0])
	}
	w.Abort()
	if _, err := s.CreateMap(ctx, MapSpec{Job: "p", Dataset: "d", Map: 1, Subpartitions: 1, SizeHint: 1 << 62}); !errors.Is(err, ErrNoDisk) {
		t.Fatalf("a partition larger than every disk: %v", err)
	}
	ds[1].refreshSpace() // full → healthy: the space is there
	w, err = s.CreateMap(ctx, MapSpec{Job: "p", Dataset: "d", Map: 2, Subpartitions: 1, Prefer: DiskSSD})
	if err != nil || w.Disk() != ds[1] {
		t.Fatalf("SSD back: %v on %v", err, w.Disk().Path())
	}
	w.Abort()
}

func TestParseDir(t *testing.T) {
	cases := []struct {
		in   string
		want DirConfig
		err  bool
	}{
		{"/data/1", DirConfig{Path: "/data/1"}, false},
		{"[ssd]/data/1", DirConfig{Path: "/data/1", Type: DiskSSD}, false},
		{" [HDD]/data/2 ", DirConfig{Path: "/data/2", Type: DiskHDD}, false},
		{"[tape]/x", DirConfig{}, true},
		{"[ssd]", DirConfig{}, true},
		{"", DirConfig{}, true},
	}
	for _, c := range cases {
		got, err := ParseDir(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseDir(%q) = %+v, %v", c.in, got, err)
		}
	}
}

// TestExtentChecker feeds a MapPartition extent and a ReducePartition
// segment area in blocks of every size from 1 byte, so that headers split
// at every offset; and it refuses damaged headers and foreign buffers.
func TestExtentChecker(t *testing.T) {
	var mapBytes []byte
	for i := range 5 {
		mapBytes = append(mapBytes, storedBuffer(uint32(2+i%2), payload(10+i*37, uint32(i)))...)
	}
	e := Extent{Offset: 1000, Length: int64(len(mapBytes))}
	for block := 1; block <= 70; block++ {
		c := NewMapChecker(e, 2, 4)
		var got []byte
		var out [][]byte
		var err error
		for off := 0; off < len(mapBytes); off += block {
			if out, err = c.Check(mapBytes[off:min(off+block, len(mapBytes))], out[:0]); err != nil {
				t.Fatalf("block %d: %v", block, err)
			}
			for _, p := range out {
				got = append(got, p...)
			}
		}
		if err := c.Finish(); err != nil || !bytes.Equal(got, mapBytes) {
			t.Fatalf("block %d: %v, %d bytes", block, err, len(got))
		}
	}
	if _, err := NewMapChecker(e, 3, 4).Check(mapBytes, nil); !errors.Is(err, layout.ErrCorrupt) {
		t.Fatalf("buffer of another subpartition: %v", err)
	}
	bad := bytes.Clone(mapBytes)
	bad[layout.BufferHeaderSize+10+5] ^= 1 // the second buffer's header
	if _, err := NewMapChecker(e, 2, 4).Check(bad, nil); !errors.Is(err, layout.ErrCorrupt) {
		t.Fatalf("damaged header: %v", err)
	}
	if err := func() error { c := NewMapChecker(e, 2, 4); c.Check(mapBytes[:len(mapBytes)-1], nil); return c.Finish() }(); err == nil {
		t.Fatal("a short extent passed")
	}

	// Segments: map 0 attempt 0 committed 3 (seq 1 twice), map 1 attempt 0
	// aborted, map 1 attempt 1 committed 1.
	segs := [][]byte{
		segmentBytes(0, 0, 0, payload(5, 1)), segmentBytes(1, 0, 0, payload(40, 2)), segmentBytes(0, 0, 1, payload(33, 3)),
		segmentBytes(0, 0, 1, payload(33, 3)), segmentBytes(1, 1, 0, payload(1, 4)), segmentBytes(0, 0, 2, payload(70, 5)),
	}
	want := bytes.Join([][]byte{segs[0], segs[2], segs[4], segs[5]}, nil)
	area := bytes.Join(segs, nil)
	commits := []layout.AttemptCommit{{Map: 0, Attempt: 0, Segments: 3, Bytes: 5 + 33 + 70}, {Map: 1, Attempt: 1, Segments: 1, Bytes: 1}}
	re := Extent{Offset: 77, Length: int64(len(area)), Region: -1}
	for block := 1; block <= 80; block++ {
		f, _ := layout.NewReduceFilter(commits)
		c := NewReduceChecker(re, f)
		var got []byte
		var out [][]byte
		var err error
		for off := 0; off < len(area); off += block {
			if out, err = c.Check(area[off:min(off+block, len(area))], out[:0]); err != nil {
				t.Fatalf("block %d: %v", block, err)
			}
			for _, p := range out {
				got = append(got, p...)
			}
		}
		if err := c.Finish(); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("block %d: %v, served %d bytes, want %d", block, err, len(got), len(want))
		}
	}
	// A committed segment missing from the area fails Finish.
	f, _ := layout.NewReduceFilter(commits)
	short := bytes.Join(segs[:5], nil)
	c := NewReduceChecker(Extent{Offset: 0, Length: int64(len(short))}, f)
	c.Check(short, nil)
	if err := c.Finish(); !errors.Is(err, layout.ErrCorrupt) {
		t.Fatalf("missing committed segment: %v", err)
	}
}

// TestRelease: a release is recorded before anything is deleted, stops
// serving and writing at once, deletes at the configured rate, and refuses
// new partitions of the dataset until the deletion is done.
func TestRelease(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		cfg := testConfig(backend, dir)
		cfg.DeleteBytesPerSecond = 128 << 10 // the eight MapPartitions hold more: the release stays pending a while
		ev := &eventLog{}
		cfg.OnEvent = ev.add
		s := openTestStore(t, cfg)
		ctx := context.Background()
		for m := uint32(0); m < 8; m++ {
			writeMap(t, s, "rel", "a", m, 0)
		}
		writeMap(t, s, "rel", "b", 0, 0)
		writeMap(t, s, "other", "a", 0, 0)
		w, err := s.CreateMap(ctx, MapSpec{Job: "rel", Dataset: "a", Map: 99, Subpartitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		rp, err := s.OpenReduce(ctx, ReduceSpec{Job: "rel", Dataset: "a", Reduce: 0, MapCount: 1})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := s.Release(ctx, "rel", "a"); err != nil {
			t.Fatal(err)
		}
		ev.wait(t, EventReleased)
		if err := w.StartRegion(false); !errors.Is(err, ErrReleased) {
			t.Fatalf("writer of a released dataset: %v", err)
		}
		if _, err := rp.Push(ctx, testSegment(0, 0, 0, 0)); !errors.Is(err, ErrReleased) {
			t.Fatalf("push to a released dataset: %v", err)
		}
		if _, err := s.OpenMap("rel", "a", 0, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("released partition served: %v", err)
		}
		if _, err := s.CreateMap(ctx, MapSpec{Job: "rel", Dataset: "a", Map: 100, Subpartitions: 4}); !errors.Is(err, ErrReleased) {
			t.Fatalf("new partition of a dataset being deleted: %v", err)
		}
		if err := s.WaitDeletes(ctx); err != nil {
			t.Fatal(err)
		}
		// Over 128 KiB at 128 KiB/s, the first second's worth free: the
		// limiter held the deletion back for a while (a lower bound only).
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Fatalf("deleted in %v", d)
		}
		if _, err := os.Stat(filepath.Join(dir, layout.DatasetDir([]byte("rel"), []byte("a")))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("released dataset still on disk: %v", err)
		}
		if st := s.Stats().Disks[0]; st.DeletedFiles < 8 {
			t.Fatalf("%d files deleted", st.DeletedFiles)
		}
		checkMapReadable(t, s, "rel", "b", 0, 0)
		checkMapReadable(t, s, "other", "a", 0, 0)
		// The dataset may be written again once deleted, ReducePartitions
		// too (a file created in the background must not survive in the
		// disk's directory cache across the deletion).
		writeMap(t, s, "rel", "a", 0, 0)
		rp2, err := s.OpenReduce(ctx, ReduceSpec{Job: "rel", Dataset: "a", Reduce: 1, MapCount: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := pushAll(ctx, rp2, 0, 0, 2, 1); err != nil {
			t.Fatal(err)
		}
		if err := rp2.Commit(ctx, 0, 0, 2); err != nil {
			t.Fatal(err)
		}
		if _, err := rp2.Finalize(ctx); err != nil {
			t.Fatalf("a ReducePartition of the dataset written again: %v", err)
		}
		// A job release takes every dataset of the job.
		if err := s.Release(ctx, "rel", ""); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitDeletes(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.OpenMap("rel", "b", 0, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("partition of a released job: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := openTestStore(t, testConfig(backend, dir))
		if r := s2.Recovery(); r.Disks[0].Maps != 1 || len(r.Lost) != 0 || r.Disks[0].Removed != 0 {
			t.Fatalf("after releases: %+v lost %+v", r.Disks[0], r.Lost)
		}
	})
}

func TestTokenBucket(t *testing.T) {
	b := bucket{rate: 1000}
	stop := make(chan struct{})
	start := time.Now()
	for range 1500 {
		if !b.take(1, stop) {
			t.Fatal("stopped")
		}
	}
	// The first second's worth is free, the next 500 take about half a
	// second: at least a quarter of one, however slow the machine.
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("1,500 tokens at 1,000/s in %v", d)
	}
	close(stop)
	b2 := bucket{rate: 1}
	b2.take(1, stop)
	if b2.take(10, stop) {
		t.Fatal("a stopped bucket waited out ten seconds")
	}
}

func TestStats(t *testing.T) {
	s := openTestStore(t, testConfig("", t.TempDir()))
	writeMap(t, s, "s", "d", 0, 0)
	st := s.Stats()
	d := st.Disks[0]
	if d.BytesWritten == 0 || d.Fdatasync.Count == 0 || d.Commits == 0 || d.CommitBatches == 0 || d.MapsCommitted != 1 ||
		st.MapsCommitted != 1 || st.DisksHealthy != 1 || d.BufferLimit == 0 || d.Backend == "" {
		t.Fatalf("stats %+v", d)
	}
	var batches uint64
	for _, n := range d.BatchSizes {
		batches += n
	}
	if int64(batches) != d.CommitBatches || d.Fdatasync.Quantile(0.5) <= 0 {
		t.Fatalf("histograms %+v %+v", d.BatchSizes, d.Fdatasync)
	}
	r, err := s.OpenMap("s", "d", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	readAllExtents(t, r, 0, 4)
	r.Close()
	if s.Stats().Disks[0].BytesRead == 0 {
		t.Fatal("no bytes read counted")
	}
}

// TestDataDirSpreadsJobs checks that data/ carries the top-of-hierarchy
// flag once it exists, and gets it back at recovery when it was cleared.
func TestDataDirSpreadsJobs(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.EXT4_SUPER_MAGIC {
		t.Skipf("%s is not on ext2/3/4 (statfs type %#x): the flag is ext4's", dir, fs.Type)
	}
	data := filepath.Join(dir, layout.DataDir)
	flags := func() uint32 {
		t.Helper()
		fd, err := unix.Open(data, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cfg := testConfig(diskio.BackendPool, dir)
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeMap(t, s, "j", "d", 0, 0)
	if f := flags(); f&fsTopdirFlag == 0 {
		t.Fatalf("data/ flags %#x: no FS_TOPDIR_FL", f)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	fd, err := unix.Open(data, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags()&^fsTopdirFlag))
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if f := flags(); f&fsTopdirFlag != 0 {
		t.Fatalf("data/ flags %#x: FS_TOPDIR_FL not cleared", f)
	}
	s = openTestStore(t, cfg)
	if f := flags(); f&fsTopdirFlag == 0 {
		t.Fatalf("data/ flags %#x after recovery: no FS_TOPDIR_FL", f)
	}
	checkMapReadable(t, s, "j", "d", 0, 0)
}

// tmpfileDirs records the directories an IO opens with O_TMPFILE.
type tmpfileDirs struct {
	diskio.IO
	mu   *sync.Mutex
	dirs *[]string
}

func (r tmpfileDirs) OpenFile(path string, flag int, perm os.FileMode) (*diskio.File, error) {
	if flag&unix.O_TMPFILE == unix.O_TMPFILE {
		r.mu.Lock()
		*r.dirs = append(*r.dirs, filepath.Base(path))
		r.mu.Unlock()
	}
	return r.IO.OpenFile(path, flag, perm)
}

// TestInodeDirs checks that new files get their inodes in inode
// directories that move on every inodeDirFiles files, that a retired one
// goes when its last creation ends (not before), that none is left after
// Close, and that recovery removes those a crash left.
func TestInodeDirs(t *testing.T) {
	defer func(n int) { inodeDirFiles = n }(inodeDirFiles)
	inodeDirFiles = 3
	dir := t.TempDir()
	inodeDirs := func() []string {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(dir, layout.DataDir))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), layout.InodeDirPrefix) {
				names = append(names, e.Name())
			}
		}
		return names
	}
	var mu sync.Mutex
	var opened []string
	cfg := testConfig(diskio.BackendPool, dir)
	cfg.WrapIO = func(_ string, io diskio.IO) diskio.IO { return tmpfileDirs{io, &mu, &opened} }
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var seen, want []string
	for m := range uint32(7) {
		writeMap(t, s, "j", "d", m, 0)
		names := inodeDirs()
		if len(names) != 1 {
			t.Fatalf("after %d files: inode directories %q, want one", m+1, names)
		}
		if !slices.Contains(seen, names[0]) {
			seen = append(seen, names[0])
		}
		want = append(want, names[0])
	}
	if len(seen) != 3 { // files 1-3, 4-6, 7
		t.Fatalf("7 files went through inode directories %q, want 3", seen)
	}
	if !slices.Equal(opened, want) {
		t.Fatalf("files made with O_TMPFILE in %q, want %q", opened, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if names := inodeDirs(); len(names) != 0 {
		t.Fatalf("after Close: inode directories %q, want none", names)
	}

	left := filepath.Join(dir, layout.DataDir, layout.InodeDirPrefix+"0123456789abcdef")
	if err := os.Mkdir(left, 0o755); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, cfg)
	if names := inodeDirs(); len(names) != 0 {
		t.Fatalf("after recovery: inode directories %q, want none", names)
	}
	for m := range uint32(7) {
		checkMapReadable(t, s, "j", "d", m, 0)
	}

	// A retired directory still in use stays until its last user leaves.
	inodeDirFiles = 1
	d := s.Disks()[0]
	d.mu.Lock()
	p1, drop1 := d.inodeDirLocked()
	p2, drop2 := d.inodeDirLocked()
	d.mu.Unlock()
	if p1 == nil || p2 == nil || p1 == p2 || drop1 != "" || drop2 != "" {
		t.Fatalf("inode directories %v, %v, dropped %q, %q: want two, none dropped", p1, p2, drop1, drop2)
	}
	if names := inodeDirs(); len(names) != 2 {
		t.Fatalf("inode directories %q with a retired one in use, want two", names)
	}
	d.mu.Lock()
	drop1, drop2 = d.leaveInodeDirLocked(p1), d.leaveInodeDirLocked(p2)
	d.mu.Unlock()
	if drop1 != p1.rel || drop2 != "" {
		t.Fatalf("dropped %q, %q; want %q, none", drop1, drop2, p1.rel)
	}
	d.removeInodeDir(drop1)
	if names := inodeDirs(); !slices.Equal(names, []string{filepath.Base(p2.rel)}) {
		t.Fatalf("inode directories %q, want only the current one", names)
	}
}
