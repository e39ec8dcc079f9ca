package scheduler

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"golang.org/x/sys/unix"
)

// fibmap asks the filesystem for the device block of file block blk
// (FIBMAP, the ioctl FIEMAP replaced; it needs CAP_SYS_RAWIO).
func fibmap(fd uintptr, blk int) (int, error) {
	b := int32(blk)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, 1 /* FIBMAP */, uintptr(unsafe.Pointer(&b)))
	if errno != 0 {
		return 0, errno
	}
	return int(b), nil
}

// TestFiemapRealFile maps a file written on the test directory's
// filesystem (ext4 here) and checks FIEMAP's answer: every byte covered,
// block aligned, and, where FIBMAP is allowed, the same device block for
// every file block.
func TestFiemapRealFile(t *testing.T) {
	e := newEnv(t, envConfig{})
	const size = 4<<20 + 12345
	f := e.file(size)
	phys, err := Fiemap(f, size)
	if errors.Is(err, ErrNoFiemap) {
		t.Skipf("the test directory's filesystem gives no physical positions: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var next int64
	for _, x := range phys {
		if x.Logical != next || x.Length <= 0 || x.Physical <= 0 || x.Physical%4096 != 0 {
			t.Fatalf("extents %+v: not a gapless, aligned cover", phys)
		}
		next += x.Length
	}
	if next < size {
		t.Fatalf("extents cover %d of %d bytes", next, size)
	}
	fi := &fileInfo{phys: phys}
	osf, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer osf.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(osf.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	bs := int64(st.Bsize)
	checked := 0
	for blk := int64(0); blk*bs < size; blk++ {
		dev, err := fibmap(osf.Fd(), int(blk))
		if err != nil {
			t.Logf("FIBMAP unavailable (%v): FIEMAP checked for coverage only", err)
			break
		}
		if got := fi.position(blk * bs); got != int64(dev)*bs {
			t.Fatalf("file block %d: FIEMAP places it at %d, FIBMAP at %d", blk, got, int64(dev)*bs)
		}
		checked++
	}
	t.Logf("%d extents, %d blocks checked against FIBMAP", len(phys), checked)
}

// TestFiemapFallback: on tmpfs FIEMAP has nothing to say; the scheduler
// orders such files by offset, and a read of them traces at a synthetic
// position that keeps the file's bytes contiguous.
func TestFiemapFallback(t *testing.T) {
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		t.Skip("no /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "sluice-sched-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	var fst unix.Statfs_t
	if err := unix.Statfs(dir, &fst); err != nil || fst.Type != unix.TMPFS_MAGIC {
		t.Skipf("/dev/shm is not tmpfs")
	}
	e := newEnv(t, envConfig{backend: diskio.BackendBuffered, dir: dir})
	f := e.file(1 << 20)
	if _, err := Fiemap(f, 1<<20); !errors.Is(err, ErrNoFiemap) {
		t.Fatalf("FIEMAP on tmpfs: %v, want ErrNoFiemap", err)
	}
	s := e.sched(Config{Depth: 1, Trace: true, CacheBytes: -1, MergeGapBytes: -1})
	resume := pause(s)
	var rs []*Reader
	var all [][]Extent
	for _, off := range []int64{300 << 10, 100 << 10, 200 << 10} {
		x := []Extent{{File: f, Offset: off, Length: 1000}}
		r, err := s.Register(ReaderConfig{Extents: x})
		if err != nil {
			t.Fatal(err)
		}
		r.AddCredit(1000)
		rs, all = append(rs, r), append(all, x)
	}
	resume()
	for i, r := range rs {
		if _, err := e.drain(context.Background(), r, all[i], 0); err != nil {
			t.Fatal(err)
		}
	}
	var offs []int64
	var base int64
	for i, r := range s.Trace() {
		offs = append(offs, r.Offset)
		p := r.Segments[0].Physical
		if i == 0 {
			base = p - r.Offset
		}
		if p-r.Offset != base || len(r.Segments) != 1 {
			t.Errorf("read at %d traced at %+v: not the file's base plus offset", r.Offset, r.Segments)
		}
	}
	if want := []int64{100 << 10, 200 << 10, 300 << 10}; !slices.Equal(offs, want) {
		t.Errorf("reads at %v, want %v", offs, want)
	}
}

// TestKeyOf: two files differ; one file opened twice is one key, and so is
// the same file seen through an *os.File.
func TestKeyOf(t *testing.T) {
	e := newEnv(t, envConfig{})
	a, b := e.file(4096), e.file(4096)
	ka, _, err := KeyOf(a)
	if err != nil {
		t.Fatal(err)
	}
	kb, _, _ := KeyOf(b)
	if ka == kb {
		t.Fatal("two files, one key")
	}
	osf, err := os.Open(filepath.Clean(a.Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer osf.Close()
	ko, size, err := KeyOfFd(int(osf.Fd()))
	if err != nil || ko != ka || size != 4096 {
		t.Fatalf("KeyOfFd: %v %d %v, want %v", ko, size, err, ka)
	}
}

// TestFiemapSparse: a file with a hole has two extents; a read across the
// hole is traced as two segments, and bytes in the hole are placed after
// the extent before them.
func TestFiemapSparse(t *testing.T) {
	e := newEnv(t, envConfig{})
	path := filepath.Join(e.dir, "sparse")
	osf, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for _, off := range []int64{0, 3 << 20} {
		if _, err := osf.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(osf.Sync(), osf.Close()); err != nil {
		t.Fatal(err)
	}
	f, err := e.io.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.files = append(e.files, f)
	phys, err := Fiemap(f, 4<<20)
	if errors.Is(err, ErrNoFiemap) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(phys) != 2 || phys[0].Logical != 0 || phys[1].Logical != 3<<20 {
		t.Fatalf("extents %+v, want two at 0 and 3 MiB", phys)
	}
	fi := &fileInfo{phys: phys}
	if got, want := fi.position(2<<20), phys[0].Physical+2<<20; got != want {
		t.Errorf("position in the hole %d, want %d", got, want)
	}
	segs := fi.segments(nil, 512<<10, 3<<20)
	want := []TraceSegment{{Physical: phys[0].Physical + 512<<10, Length: 5 << 19}, {Physical: phys[1].Physical, Length: 512 << 10}}
	if phys[1].Physical == phys[0].Physical+3<<20 {
		want = []TraceSegment{{Physical: phys[0].Physical + 512<<10, Length: 3 << 20}}
	}
	if !slices.Equal(segs, want) {
		t.Errorf("segments %+v, want %+v", segs, want)
	}
}
