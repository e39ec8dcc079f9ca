// Package diskio is the storage engine's IO seam: every byte the engine reads
// or writes, and every fdatasync, goes through the IO interface defined here.
//
// The interface is small and asynchronous. A caller fills Requests
// (positional read, positional write, or fdatasync of a File), hands any
// number of them to Submit in one call, and receives each one back, with its
// result, on the Done channel it chose, or through its Complete function,
// which the IO calls on its own goroutine: a caller that reacts to a
// completion at once (returns the buffer, submits the next write) then does
// not wait for one of its goroutines to be scheduled on cores busy with
// other work. Implementations:
//
//   - uring: one io_uring per IO, owned by one goroutine locked to its OS
//     thread (so the ring can use SINGLE_ISSUER, COOP_TASKRUN and
//     DEFER_TASKRUN); any goroutine may Submit, which queues the requests and
//     wakes the owner through an eventfd the ring itself is reading, so the
//     owner sleeps in io_uring_enter for completions and new work alike.
//     Buffers from a registered slab (engine/mem) go as READ_FIXED and
//     WRITE_FIXED.
//   - pool: a pool of goroutines doing pread(2), pwrite(2) and fdatasync(2),
//     for kernels and sandboxes without io_uring.
//   - Faulty: a wrapper that injects errors (EIO, ENOSPC), short writes and
//     latency into another IO, chosen by rules on operation, file and count.
//
// Files are opened through the IO with O_DIRECT, aligned to what
// statx(STATX_DIOALIGN) reports for the file (falling back to the device's
// logical block size), or with buffered IO where the filesystem refuses
// O_DIRECT (tmpfs). On a direct file, a request whose buffer address, offset
// or length is not aligned fails in Submit with an *AlignError, before it
// reaches the kernel. New picks the best backend that works here and logs one
// line saying which, unless told which one to use.
//
// Every request passed to a successful Submit is completed exactly once: with
// its result, or with ErrClosed when the IO is closed before the request could
// start. Close waits for every request in flight, so that no buffer is still
// being read or written by the kernel when its owner reuses it.
package diskio

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Op is the kind of a request.
type Op uint8

const (
	OpRead  Op = iota + 1 // pread: fill Buf from Off
	OpWrite               // pwrite: write Buf at Off
	OpSync                // fdatasync the file; Buf and Off are unused
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpSync:
		return "fdatasync"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// MaxRequestBytes bounds one read or write (the io_uring SQE length is 32
// bits; a gigabyte is far beyond any useful single IO).
const MaxRequestBytes = 1 << 30

// Request is one asynchronous IO. The caller owns it: it may reuse it once
// it came back on Done, or once its Complete function ran. Nothing in a
// request allocates; callers keep pools of them.
type Request struct {
	Op   Op
	File *File
	Buf  []byte
	Off  int64
	// Done receives the request when it completes. The channel must have room
	// for every request the caller has in flight on it: completions are
	// delivered by the IO's own goroutines, which block on a full channel.
	Done chan<- *Request
	// Complete, when set, receives the request instead of Done: the IO
	// calls it on its own goroutine as the request completes (or in Submit,
	// for a request that fails there), so it must not block, nor wait for
	// another request. It may Submit: a Submit made while the IO runs
	// completions never waits for queue space.
	Complete func(*Request)
	// Tag is for the caller (an index into its own tables); the IO never
	// reads it.
	Tag uint64

	// N is the number of bytes transferred. A read at or past the end of
	// the file is short (N < len(Buf)) with a nil Err, as pread(2) is.
	N int
	// Err is nil or an *OpError. A write that transferred fewer bytes than
	// asked fails with an *OpError wrapping ErrShortWrite.
	Err error

	// restore is the caller's Buf while a Faulty wrapper shortened it.
	restore []byte
	// held: the request holds its File open (holdFiles) until it
	// completes.
	held bool
}

// holdFiles holds each request's file open until the request completes
// (File.hold), or none of them, returning an error, if one was closed after
// validate: the backends call it before queueing validated requests.
func holdFiles(reqs []*Request) error {
	for i, r := range reqs {
		if !r.File.hold() {
			for _, h := range reqs[:i] {
				h.held = false
				h.File.unhold()
			}
			return fmt.Errorf("diskio: %s %s: %w", r.Op, r.File.path, os.ErrClosed)
		}
		r.held = true
	}
	return nil
}

// finish records the result and hands the request back to its owner. Every
// backend completes through here, so that short writes and errors read the
// same whatever the backend.
func (r *Request) finish(n int, err error) {
	if r.restore != nil {
		r.Buf, r.restore = r.restore, nil
	}
	if r.held {
		r.held = false
		r.File.unhold()
	}
	r.N = n
	switch {
	case err != nil:
		r.Err = r.opError(err)
	case r.Op == OpWrite && n < len(r.Buf):
		r.Err = r.opError(ErrShortWrite)
	default:
		r.Err = nil
	}
	if r.Complete != nil {
		r.Complete(r)
		return
	}
	r.Done <- r
}

func (r *Request) opError(err error) error {
	var e *OpError
	if errors.As(err, &e) {
		return err
	}
	return &OpError{Op: r.Op, Path: r.File.path, Off: r.Off, Len: len(r.Buf), Err: err}
}

// Errors.
var (
	// ErrClosed completes requests submitted to, or still queued in, a
	// closed IO.
	ErrClosed = errors.New("diskio: IO closed")
	// ErrShortWrite means the kernel wrote fewer bytes than asked without
	// an error (on a full disk, for instance).
	ErrShortWrite = errors.New("diskio: short write")
	// ErrUnaligned matches every *AlignError.
	ErrUnaligned = errors.New("diskio: unaligned direct IO")
)

// OpError is the error of one failed request: what, where, and the cause
// (a syscall.Errno for kernel errors, so errors.Is(err, syscall.ENOSPC)
// works).
type OpError struct {
	Op   Op
	Path string
	Off  int64
	Len  int
	Err  error
}

func (e *OpError) Error() string {
	if e.Op == OpSync {
		return fmt.Sprintf("diskio: %s %s: %v", e.Op, e.Path, e.Err)
	}
	return fmt.Sprintf("diskio: %s %s [%d, +%d): %v", e.Op, e.Path, e.Off, e.Len, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// AlignError rejects a request on a direct file whose buffer address, offset
// or length breaks the file's DIO alignment.
type AlignError struct {
	Op     Op
	Path   string
	Addr   uintptr
	Off    int64
	Len    int
	Align  Alignment
	Reason string
}

func (e *AlignError) Error() string {
	return fmt.Sprintf("diskio: %s %s: %s (buffer %#x, offset %d, length %d; O_DIRECT needs memory aligned to %d and offset and length to %d)",
		e.Op, e.Path, e.Reason, e.Addr, e.Off, e.Len, e.Align.Memory, e.Align.Offset)
}

// Is makes errors.Is(err, ErrUnaligned) hold.
func (e *AlignError) Is(target error) bool { return target == ErrUnaligned }

// IO is the seam. All methods are safe for concurrent use.
type IO interface {
	// OpenFile opens path with os.OpenFile-style flags, adding O_DIRECT when
	// the IO is direct and O_CLOEXEC always.
	OpenFile(path string, flag int, perm os.FileMode) (*File, error)
	// Submit validates every request, then queues them all; it blocks while
	// the IO's queue is full (except while the IO runs completions: see
	// Request.Complete) and never drops a request. It fails, queueing
	// nothing, when a request is malformed, unaligned or on a closed File.
	// On hot paths pass a slice the caller keeps (Submit(batch...)): a call
	// with literal arguments, Submit(r), allocates its argument slice.
	Submit(reqs ...*Request) error
	// RegisterMemory offers a slab whose buffers (unit bytes each) will be
	// used for IO, so that the backend may register it with the kernel. It
	// reports whether it did; not registering is not an error.
	RegisterMemory(slab []byte, unit int) (bool, error)
	// Info describes the IO for logs and metrics.
	Info() Info
	// Close completes every queued and in-flight request, then releases the
	// IO's resources. Requests submitted afterwards complete with ErrClosed
	// (Submit itself returns nil for them).
	Close() error
}

// Info describes an IO.
type Info struct {
	Backend    string // "uring" or "pool"
	Direct     bool   // files are opened with O_DIRECT
	Depth      int    // requests in flight at most
	Registered bool   // memory registered as fixed buffers
	Detail     string // e.g. the ring flags granted, or why io_uring is unusable
}

func (i Info) String() string {
	mode := "buffered"
	if i.Direct {
		mode = "O_DIRECT"
	}
	s := fmt.Sprintf("%s, %s, depth %d", i.Backend, mode, i.Depth)
	if i.Registered {
		s += ", fixed buffers"
	}
	if i.Detail != "" {
		s += " (" + i.Detail + ")"
	}
	return s
}

// validate checks a request before it is queued.
func validate(r *Request) error {
	if r.Done == nil && r.Complete == nil {
		return errors.New("diskio: request without a Done channel or Complete function")
	}
	if r.File == nil || r.File.fd < 0 {
		return errors.New("diskio: request without an open file")
	}
	if r.File.isClosed() {
		// Its descriptor number may already name another file, which the
		// request would read or write instead.
		return fmt.Errorf("diskio: %s %s: %w", r.Op, r.File.path, os.ErrClosed)
	}
	switch r.Op {
	case OpSync:
		return nil
	case OpRead, OpWrite:
	default:
		return fmt.Errorf("diskio: unknown op %d", r.Op)
	}
	if r.Off < 0 {
		return fmt.Errorf("diskio: %s %s at negative offset %d", r.Op, r.File.path, r.Off)
	}
	if len(r.Buf) > MaxRequestBytes {
		return fmt.Errorf("diskio: %s %s of %d bytes exceeds %d", r.Op, r.File.path, len(r.Buf), MaxRequestBytes)
	}
	return r.File.checkAligned(r.Op, r.Buf, r.Off)
}

// errno converts a negative io_uring result into an error.
func errno(res int32) error { return syscall.Errno(-res) }

func bufAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// Do submits reqs, waits for all of them and returns the first error. It
// allocates a channel per call: for cold paths (metadata, tools), not for
// the data path.
func Do(io IO, reqs ...*Request) error {
	done := make(chan *Request, len(reqs))
	for _, r := range reqs {
		r.Done = done
	}
	if err := io.Submit(reqs...); err != nil {
		return err
	}
	var first error
	for range reqs {
		if r := <-done; r.Err != nil && first == nil {
			first = r.Err
		}
	}
	return first
}
