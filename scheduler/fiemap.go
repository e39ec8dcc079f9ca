package scheduler

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"unsafe"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"golang.org/x/sys/unix"
)

// FIEMAP (Documentation/filesystems/fiemap.rst). golang.org/x/sys/unix has
// neither the ioctl number nor the structures, so they are spelled out here,
// byte for byte as in include/uapi/linux/fiemap.h.
const (
	// fsIocFiemap is _IOWR('f', 11, struct fiemap).
	fsIocFiemap = 0xC020660B

	fiemapFlagSync = 0x1 // flush delayed allocation before mapping

	fiemapExtentLast       = 0x1   // the file's last extent
	fiemapExtentUnknown    = 0x2   // data location unknown
	fiemapExtentDelalloc   = 0x4   // not allocated yet (implies unknown)
	fiemapExtentEncoded    = 0x8   // compressed or otherwise encoded
	fiemapExtentNotAligned = 0x100 // not block aligned
	fiemapExtentInline     = 0x200 // stored in the inode, no own blocks

	// fiemapUnusable are the flags whose physical offsets do not place data
	// on the disk's surface; a file with any of them is ordered by offset.
	fiemapUnusable = fiemapExtentUnknown | fiemapExtentDelalloc | fiemapExtentEncoded | fiemapExtentInline | fiemapExtentNotAligned

	fiemapBatch = 128 // extents asked for per ioctl
)

type fiemapHeader struct {
	Start, Length                     uint64
	Flags, Mapped, Count, ReservedHdr uint32
}

type fiemapExtent struct {
	Logical, Physical, Length uint64
	reserved64                [2]uint64
	Flags                     uint32
	reserved                  [3]uint32
}

type fiemapRequest struct {
	hdr fiemapHeader
	ext [fiemapBatch]fiemapExtent
}

// The kernel's struct sizes: a 32-byte header and 56-byte extents.
const (
	_ uintptr = unsafe.Sizeof(fiemapHeader{}) - 32
	_ uintptr = 32 - unsafe.Sizeof(fiemapHeader{})
	_ uintptr = unsafe.Sizeof(fiemapExtent{}) - 56
	_ uintptr = 56 - unsafe.Sizeof(fiemapExtent{})
)

// PhysExtent maps file bytes [Logical, Logical+Length) to the device bytes
// starting at Physical.
type PhysExtent struct {
	Logical, Physical, Length int64
}

// ErrNoFiemap is returned by Fiemap when the filesystem does not map files
// to device offsets (tmpfs, overlay filesystems, some FUSE filesystems) or
// maps this file in a way that gives no disk position (inline or encoded
// data, delayed allocation).
var ErrNoFiemap = errors.New("scheduler: FIEMAP gives no physical positions for this file")

// Fiemap returns the physical extents of the first size bytes of f, in
// logical order, from the FS_IOC_FIEMAP ioctl (with FIEMAP_FLAG_SYNC, so
// that delayed allocations are placed first). Holes are absent from the
// result. It fails with an error matching ErrNoFiemap when the filesystem
// cannot say where the data lies.
func Fiemap(f *diskio.File, size int64) ([]PhysExtent, error) {
	var out []PhysExtent
	req := new(fiemapRequest)
	start := uint64(0)
	for start < uint64(size) {
		req.hdr = fiemapHeader{Start: start, Length: uint64(size) - start, Flags: fiemapFlagSync, Count: fiemapBatch}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(f.Fd()), fsIocFiemap, uintptr(unsafe.Pointer(req)))
		if errno != 0 {
			if errno == unix.EOPNOTSUPP || errno == unix.ENOTTY || errno == unix.EINVAL {
				return nil, fmt.Errorf("%w: %s: %w", ErrNoFiemap, f.Name(), errno)
			}
			return nil, fmt.Errorf("scheduler: FIEMAP %s: %w", f.Name(), errno)
		}
		n := int(req.hdr.Mapped)
		if n == 0 {
			break // the rest is a hole
		}
		last := false
		for _, e := range req.ext[:n] {
			if e.Flags&fiemapUnusable != 0 {
				return nil, fmt.Errorf("%w: %s: extent at %d has flags %#x", ErrNoFiemap, f.Name(), e.Logical, e.Flags)
			}
			out = append(out, PhysExtent{Logical: int64(e.Logical), Physical: int64(e.Physical), Length: int64(e.Length)})
			start = e.Logical + e.Length
			last = last || e.Flags&fiemapExtentLast != 0
		}
		if last {
			break
		}
	}
	if len(out) == 0 && size > 0 {
		return nil, fmt.Errorf("%w: %s: no extents", ErrNoFiemap, f.Name())
	}
	return out, nil
}

// FileKey identifies a file's contents across opens: device, inode and the
// inode's change time. A committed partition file never changes, and a new
// file that reuses the inode number has another change time, so data
// cached under a key is never served for another file.
type FileKey struct {
	Dev, Ino uint64
	Ctime    int64 // nanoseconds
}

// KeyOf returns the key and the size of an open file.
func KeyOf(f *diskio.File) (FileKey, int64, error) {
	k, size, err := KeyOfFd(f.Fd())
	if err != nil {
		return k, size, fmt.Errorf("scheduler: %s: %w", f.Name(), err)
	}
	return k, size, nil
}

// KeyOfFd returns the key and the size of the file open as fd (an
// *os.File's Fd, for readers outside the IO seam).
func KeyOfFd(fd int) (FileKey, int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return FileKey{}, 0, fmt.Errorf("scheduler: fstat: %w", err)
	}
	return FileKey{Dev: st.Dev, Ino: st.Ino, Ctime: st.Ctim.Nano()}, st.Size, nil
}

var keySeed = maphash.MakeSeed()

// hash folds a key into 64 bits for the caches' maps.
func (k FileKey) hash() uint64 { return maphash.Comparable(keySeed, k) }

// fileInfo is what the scheduler knows about one open file with readers.
type fileInfo struct {
	f     *diskio.File
	key   FileKey
	khash uint64
	size  int64
	align int64 // offset alignment of direct IO (1 for buffered files)
	// phys is the FIEMAP map; nil when the file is ordered by (file,
	// offset) instead, at the synthetic position base.
	phys []PhysExtent
	base int64
	refs int // readers registered on the file, guarded by Scheduler.mu

	q fileQueue // the elevator's pending items of this file
}

// position returns the disk position of file offset off: the device offset
// where FIEMAP knows it, else base + off. Offsets in holes or past the last
// extent are placed relative to the nearest extent before them.
func (fi *fileInfo) position(off int64) int64 {
	if fi.phys == nil {
		return fi.base + off
	}
	i := sort.Search(len(fi.phys), func(i int) bool { return fi.phys[i].Logical > off }) - 1
	if i < 0 {
		i = 0
	}
	e := &fi.phys[i]
	return e.Physical + (off - e.Logical)
}

// segments appends to dst the physically contiguous pieces of the file
// bytes [off, off+n): one per FIEMAP extent touched (extents that also touch
// on the device count as one), or one in all for a file without a map.
func (fi *fileInfo) segments(dst []TraceSegment, off, n int64) []TraceSegment {
	end := off + n
	for off < end {
		segEnd := end
		if fi.phys != nil {
			i := sort.Search(len(fi.phys), func(i int) bool { return fi.phys[i].Logical > off })
			if i < len(fi.phys) && fi.phys[i].Logical < segEnd {
				segEnd = fi.phys[i].Logical
			}
		}
		p := fi.position(off)
		if k := len(dst) - 1; k >= 0 && dst[k].Physical+dst[k].Length == p {
			dst[k].Length += segEnd - off
		} else {
			dst = append(dst, TraceSegment{Physical: p, Length: segEnd - off})
		}
		off = segEnd
	}
	return dst
}
