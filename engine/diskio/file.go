package diskio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Alignment is what O_DIRECT requires of a file's IO: buffer addresses
// aligned to Memory, offsets and lengths to Offset. Both are 1 for buffered
// files.
type Alignment struct {
	Memory int
	Offset int
}

// File is an open file of an IO.
type File struct {
	fd     int
	path   string
	direct bool
	align  Alignment
	// state is twice the number of requests holding the file open (hold),
	// plus 1 once Close was called. The descriptor is closed when the file
	// is closed and no request holds it: by Close, or by the last request
	// to complete after it. A request in flight never meets its descriptor
	// number reused by another file (a reader cancelled while its reads are
	// queued closes its file at once).
	state atomic.Int64
}

// Name is the path the file was opened with.
func (f *File) Name() string { return f.path }

// Direct reports whether the file was opened with O_DIRECT.
func (f *File) Direct() bool { return f.direct }

// Alignment is the file's IO alignment.
func (f *File) Alignment() Alignment { return f.align }

// Fd is the file descriptor, for the few syscalls outside the seam (FIEMAP).
func (f *File) Fd() int { return f.fd }

// Close closes the file. Requests already submitted on it complete on it:
// with some in flight, the descriptor is closed when the last of them
// completes, and an error closing it then goes unreported. Requests
// submitted after Close fail.
func (f *File) Close() error {
	for {
		s := f.state.Load()
		if s&1 != 0 {
			return nil
		}
		if f.state.CompareAndSwap(s, s|1) {
			if s != 0 {
				return nil // the last request closes it
			}
			return f.closeFD()
		}
	}
}

func (f *File) closeFD() error {
	if err := unix.Close(f.fd); err != nil {
		return fmt.Errorf("diskio: close %s: %w", f.path, err)
	}
	return nil
}

func (f *File) isClosed() bool { return f.state.Load()&1 != 0 }

// hold keeps the descriptor open for one more request; false once the file
// is closed.
func (f *File) hold() bool {
	for {
		s := f.state.Load()
		if s&1 != 0 {
			return false
		}
		if f.state.CompareAndSwap(s, s+2) {
			return true
		}
	}
}

// unhold ends a hold, closing the descriptor if the file was closed
// meanwhile and this was the last request holding it.
func (f *File) unhold() {
	if f.state.Add(-2) == 1 {
		_ = f.closeFD() // nobody is left to tell
	}
}

// Size is the file's length.
func (f *File) Size() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, fmt.Errorf("diskio: stat %s: %w", f.path, err)
	}
	return st.Size, nil
}

// Preallocate reserves [off, off+n) on disk and extends the file size to
// cover it (fallocate(2) with mode 0): the new range reads as zeros, and
// later writes into it do not extend the file, so ext4
// takes its inode lock shared for them and O_DIRECT writes run in
// parallel (ext4_dio_write_checks: only writes past i_size, or unaligned
// ones, take it exclusively); fio's default fallocate=native does the
// same. A writer that preallocates this way truncates the file to its real
// length when it is done.
func (f *File) Preallocate(off, n int64) error {
	for {
		err := unix.Fallocate(f.fd, 0, off, n)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &OpError{Op: OpWrite, Path: f.path, Off: off, Len: int(n), Err: fmt.Errorf("fallocate: %w", err)}
		}
		return nil
	}
}

// Truncate sets the file's length, freeing any preallocated space beyond it.
func (f *File) Truncate(n int64) error {
	if err := unix.Ftruncate(f.fd, n); err != nil {
		return fmt.Errorf("diskio: truncate %s to %d: %w", f.path, n, err)
	}
	return nil
}

func (f *File) checkAligned(op Op, buf []byte, off int64) error {
	if !f.direct {
		return nil
	}
	a := f.align
	addr := bufAddr(buf)
	var reason string
	switch {
	case len(buf) > 0 && addr%uintptr(a.Memory) != 0:
		reason = "buffer address not aligned"
	case off%int64(a.Offset) != 0:
		reason = "offset not aligned"
	case len(buf)%a.Offset != 0:
		reason = "length not aligned"
	default:
		return nil
	}
	return &AlignError{Op: op, Path: f.path, Addr: addr, Off: off, Len: len(buf), Align: a, Reason: reason}
}

// openFile opens a file for any backend.
func openFile(path string, flag int, perm os.FileMode, direct bool) (*File, error) {
	flag |= unix.O_CLOEXEC
	if direct {
		flag |= unix.O_DIRECT
	}
	fd, err := unix.Open(path, flag, uint32(perm.Perm()))
	for errors.Is(err, unix.EINTR) {
		fd, err = unix.Open(path, flag, uint32(perm.Perm()))
	}
	if err != nil {
		if direct && errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("diskio: open %s: the filesystem refuses O_DIRECT (use the buffered backend): %w", path, err)
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := &File{fd: fd, path: path, direct: direct, align: Alignment{Memory: 1, Offset: 1}}
	if direct {
		f.align = dioAlignment(fd)
	}
	return f, nil
}

// dioAlignment asks statx(2) for STATX_DIOALIGN (Linux 6.1+), and falls back
// to the logical block size of the device behind the file, then to 4096.
func dioAlignment(fd int) Alignment {
	var st unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st)
	if err == nil && st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_mem_align > 0 && st.Dio_offset_align > 0 {
		return Alignment{Memory: int(st.Dio_mem_align), Offset: int(st.Dio_offset_align)}
	}
	if err == nil {
		if n := logicalBlockSize(st.Dev_major, st.Dev_minor); n > 0 {
			return Alignment{Memory: n, Offset: n}
		}
	}
	return Alignment{Memory: 4096, Offset: 4096}
}

// logicalBlockSize reads /sys/dev/block/MAJ:MIN/queue/logical_block_size,
// or the parent device's for a partition.
func logicalBlockSize(major, minor uint32) int {
	dev := filepath.Join("/sys/dev/block", fmt.Sprintf("%d:%d", major, minor))
	for _, p := range []string{filepath.Join(dev, "queue/logical_block_size"), filepath.Join(dev, "../queue/logical_block_size")} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 && n&(n-1) == 0 {
			return n
		}
	}
	return 0
}

// CreateFile creates path, which must not exist (EEXIST, as with O_EXCL),
// and opens it through io for reading and writing. The inode is made with
// O_TMPFILE in the directory near (path's own directory when near is "")
// and then linked under its name: so the caller chooses where the file
// system allocates the inode (near's block group, on ext4), and creations
// in one directory do not wait for each other's allocation, as they do
// with O_CREAT, which holds the directory's lock throughout. When that way
// fails for any reason but an existing path (no O_TMPFILE, no /proc, near
// gone), the file is made with O_CREAT|O_EXCL, which reports any error
// that remains.
func CreateFile(io IO, path, near string, perm os.FileMode) (*File, error) {
	if near == "" {
		near = filepath.Dir(path)
	}
	if _, err := os.Stat(procFD); err == nil {
		if f, err := io.OpenFile(near, unix.O_TMPFILE|unix.O_RDWR, perm); err == nil {
			fdPath := procFD + strconv.Itoa(f.fd)
			err := unix.Linkat(unix.AT_FDCWD, fdPath, unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
			if err == nil {
				f.path = path
				return f, nil
			}
			f.Close() // never linked: the inode goes with it
			if errors.Is(err, unix.EEXIST) {
				return nil, &os.LinkError{Op: "link", Old: fdPath, New: path, Err: err}
			}
		}
	}
	return io.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
}

// procFD names an open file by its descriptor, for linkat(2) (a test points
// it elsewhere to take the other way).
var procFD = "/proc/self/fd/"

// SyncDir fsyncs a directory, making the creation, renaming or removal of
// its entries durable (fsync(2): syncing a file does not sync its directory
// entry).
func SyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("diskio: open directory %s: %w", dir, err)
	}
	serr := unix.Fsync(fd)
	cerr := unix.Close(fd)
	if serr != nil {
		return fmt.Errorf("diskio: fsync directory %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("diskio: close directory %s: %w", dir, cerr)
	}
	return nil
}

// DirectSupported reports whether files in dir can be opened with O_DIRECT
// and written through it, by creating, writing and removing a probe file.
func DirectSupported(dir string) (ok bool, err error) {
	f, err := os.CreateTemp(dir, ".sluice-dio-probe-*")
	if err != nil {
		return false, fmt.Errorf("diskio: probe O_DIRECT in %s: %w", dir, err)
	}
	path := f.Name()
	defer func() { err = errors.Join(err, os.Remove(path)) }()
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("diskio: probe O_DIRECT in %s: %w", dir, err)
	}
	df, err := openFile(path, unix.O_WRONLY, 0, true)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return false, nil
		}
		return false, err
	}
	defer func() { err = errors.Join(err, df.Close()) }()
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false, fmt.Errorf("diskio: probe O_DIRECT: %w", err)
	}
	defer func() { err = errors.Join(err, unix.Munmap(buf)) }()
	n := max(df.align.Offset, df.align.Memory)
	if n > len(buf) {
		return false, nil
	}
	if _, err := unix.Pwrite(df.fd, buf[:n], 0); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return false, nil
		}
		return false, fmt.Errorf("diskio: probe O_DIRECT write in %s: %w", dir, err)
	}
	return true, nil
}
