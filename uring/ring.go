package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Params are the options of New.
type Params struct {
	// Entries is the SQ size; the kernel rounds it up to a power of two.
	Entries uint32
	// CQEntries is the CQ size; zero means twice Entries (the kernel's
	// default).
	CQEntries uint32
	// SingleIssuer requests IORING_SETUP_SINGLE_ISSUER. The caller must then
	// create and use the ring from one goroutine locked to its OS thread
	// (runtime.LockOSThread) for the ring's whole life; see the package
	// comment.
	SingleIssuer bool
	// CoopTaskrun requests IORING_SETUP_COOP_TASKRUN.
	CoopTaskrun bool
	// DeferTaskrun requests IORING_SETUP_DEFER_TASKRUN (needs SingleIssuer):
	// completions are only posted when the owner calls Enter with
	// GetEvents, which every Wait and Submit of this package does.
	DeferTaskrun bool
}

// Ring is one io_uring instance. It is owned by one goroutine; see the
// package comment.
type Ring struct {
	fd       int
	flags    uint32
	features uint32

	ringMem []byte // SQ ring, and the CQ ring with FeatSingleMmap
	cqMem   []byte // the CQ ring without FeatSingleMmap
	sqeMem  []byte

	sqHead  *uint32 // kernel-owned
	sqTail  *uint32 // ours
	sqFlags *uint32
	sqMask  uint32
	sqes    []SQE
	// sqeTail counts SQEs handed out by GetSQE; sqeHead those published to
	// the kernel by flushing the tail. Both wrap like the kernel's counters.
	sqeTail uint32
	sqeHead uint32

	cqHead *uint32 // ours
	cqTail *uint32 // kernel-owned
	cqMask uint32
	cqes   []CQE

	closed bool
}

// New sets up a ring. Flags the running kernel does not know are dropped
// (it answers EINVAL to unknown setup flags); Flags tells what was granted.
func New(p Params) (*Ring, error) {
	if p.Entries == 0 {
		return nil, errors.New("uring: Params.Entries must be positive")
	}
	if p.DeferTaskrun && !p.SingleIssuer {
		return nil, errors.New("uring: DeferTaskrun needs SingleIssuer")
	}
	var wanted uint32 = setupClamp | setupSubmitAll
	if p.CQEntries != 0 {
		wanted |= setupCQSize
	}
	if p.SingleIssuer {
		wanted |= setupSingleIssuer
	}
	if p.CoopTaskrun {
		wanted |= setupCoopTaskrun
	}
	if p.DeferTaskrun {
		wanted |= setupDeferTaskrun
	}
	// Optional flags, dropped newest first when the kernel refuses them.
	optional := []uint32{setupDeferTaskrun, setupSingleIssuer, setupCoopTaskrun, setupSubmitAll}
	for {
		var kp params
		kp.flags = wanted
		kp.cqEntries = p.CQEntries
		fd, err := setup(p.Entries, &kp)
		if err == nil {
			r, err := mapRing(fd, &kp)
			if err != nil {
				closeErr := unix.Close(fd)
				return nil, errors.Join(err, closeErr)
			}
			return r, nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return nil, &UnusableError{Op: "io_uring_setup", Errno: errnoOf(err), Reason: reasonFor(err)}
		}
		dropped := false
		for _, f := range optional {
			if wanted&f != 0 {
				wanted &^= f
				if f == setupSingleIssuer {
					wanted &^= setupDeferTaskrun
				}
				dropped = true
				break
			}
		}
		if !dropped {
			return nil, fmt.Errorf("uring: io_uring_setup(%d entries, flags %#x): %w", p.Entries, wanted, err)
		}
	}
}

func setup(entries uint32, p *params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func mapRing(fd int, p *params) (*Ring, error) {
	r := &Ring{fd: fd, flags: p.flags, features: p.features}
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(CQE{}))
	single := p.features&FeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	// MAP_POPULATE: the rings are touched on every operation; fault them in
	// now rather than on the first submission (io_uring_setup(2), EXAMPLE).
	r.ringMem, err = unix.Mmap(fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("uring: mmap SQ ring: %w", err)
	}
	cqBase := r.ringMem
	if !single {
		r.cqMem, err = unix.Mmap(fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("uring: mmap CQ ring: %w", err), r.unmap())
		}
		cqBase = r.cqMem
	}
	sqeBytes := int(p.sqEntries) * int(unsafe.Sizeof(SQE{}))
	r.sqeMem, err = unix.Mmap(fd, offSQEs, sqeBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("uring: mmap SQEs: %w", err), r.unmap())
	}

	sq := unsafe.Pointer(&r.ringMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff.tail))
	r.sqFlags = (*uint32)(unsafe.Add(sq, p.sqOff.flags))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.sqOff.ringMask))
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	// The SQ array maps ring slots to SQE indexes. We always use SQE i for
	// slot i, so the identity mapping is written once here.
	array := unsafe.Slice((*uint32)(unsafe.Add(sq, p.sqOff.array)), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.sqeTail = atomic.LoadUint32(r.sqTail)
	r.sqeHead = r.sqeTail

	cq := unsafe.Pointer(&cqBase[0])
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*CQE)(unsafe.Add(cq, p.cqOff.cqes)), p.cqEntries)

	// Assert the kernel gave power-of-two rings whose masks match.
	if r.sqMask != p.sqEntries-1 || r.cqMask != p.cqEntries-1 {
		return nil, errors.Join(fmt.Errorf("uring: unexpected ring masks sq=%d/%d cq=%d/%d", r.sqMask, p.sqEntries, r.cqMask, p.cqEntries), r.unmap())
	}
	return r, nil
}

func (r *Ring) unmap() error {
	var errs []error
	for _, m := range [][]byte{r.sqeMem, r.cqMem, r.ringMem} {
		if m != nil {
			errs = append(errs, unix.Munmap(m))
		}
	}
	r.sqeMem, r.cqMem, r.ringMem = nil, nil, nil
	return errors.Join(errs...)
}

// Close unmaps the rings and closes the ring's file descriptor. Requests
// still in flight are cancelled by the kernel as part of tearing the ring
// down; their completions are never seen. Callers that must account for
// every request (engine/diskio does) wait for all completions first.
func (r *Ring) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return errors.Join(r.unmap(), unix.Close(r.fd))
}

// Fd is the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// Features is the kernel's io_uring_params.features for this ring.
func (r *Ring) Features() uint32 { return r.features }

// SQEntries is the submission ring's size, as the kernel granted it.
func (r *Ring) SQEntries() int { return len(r.sqes) }

// CQEntries is the completion ring's size.
func (r *Ring) CQEntries() int { return len(r.cqes) }

// SingleIssuer reports whether IORING_SETUP_SINGLE_ISSUER was granted.
func (r *Ring) SingleIssuer() bool { return r.flags&setupSingleIssuer != 0 }

// CoopTaskrun reports whether IORING_SETUP_COOP_TASKRUN was granted.
func (r *Ring) CoopTaskrun() bool { return r.flags&setupCoopTaskrun != 0 }

// DeferTaskrun reports whether IORING_SETUP_DEFER_TASKRUN was granted.
func (r *Ring) DeferTaskrun() bool { return r.flags&setupDeferTaskrun != 0 }

// SQSpace is the number of SQEs GetSQE can still hand out.
func (r *Ring) SQSpace() int {
	return len(r.sqes) - int(r.sqeTail-atomic.LoadUint32(r.sqHead))
}

// GetSQE returns the next free SQE, zeroed, or nil when the SQ is full
// (submit, and reap if the kernel holds everything, then try again).
func (r *Ring) GetSQE() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.sqeTail-head >= uint32(len(r.sqes)) {
		return nil
	}
	sqe := &r.sqes[r.sqeTail&r.sqMask]
	r.sqeTail++
	*sqe = SQE{}
	return sqe
}

// Pending is the number of SQEs prepared but not yet handed to the kernel by
// Submit.
func (r *Ring) Pending() int { return int(r.sqeTail - r.sqeHead) }

// flushSQ publishes prepared SQEs to the kernel and returns how many are
// waiting for io_uring_enter.
func (r *Ring) flushSQ() uint32 {
	if r.sqeTail != r.sqeHead {
		r.sqeHead = r.sqeTail
		// Store-release: the SQE contents above become visible before the
		// kernel can see the new tail.
		atomic.StoreUint32(r.sqTail, r.sqeTail)
	}
	return r.sqeTail - atomic.LoadUint32(r.sqHead)
}

// Submit hands every prepared SQE to the kernel in one io_uring_enter and
// returns how many it consumed. It never waits for completions, but it does
// run pending task work when the ring defers it.
func (r *Ring) Submit() (int, error) {
	return r.SubmitAndWait(0)
}

// SubmitAndWait submits every prepared SQE and waits until at least
// waitNr completions are available, in one io_uring_enter. A signal
// interrupting the wait (EINTR; the Go runtime preempts with SIGURG) is
// retried.
func (r *Ring) SubmitAndWait(waitNr uint32) (int, error) {
	toSubmit := r.flushSQ()
	var flags uint32
	if waitNr > 0 || r.flags&setupDeferTaskrun != 0 || atomic.LoadUint32(r.sqFlags)&(sqCQOverflow|sqTaskrun) != 0 {
		flags |= enterGetEvents
	}
	submitted := 0
	for {
		n, err := enter(r.fd, toSubmit, waitNr, flags)
		if n > 0 {
			submitted += n
			toSubmit -= uint32(n)
		}
		switch {
		case err == nil:
			return submitted, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return submitted, fmt.Errorf("uring: io_uring_enter(submit %d, wait %d): %w", toSubmit, waitNr, err)
		}
	}
}

func enter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// PeekCQE returns the oldest unreaped completion without waiting, or nil.
// The CQE stays valid until CQAdvance.
func (r *Ring) PeekCQE() *CQE {
	head := *r.cqHead // only we write the CQ head
	if head == atomic.LoadUint32(r.cqTail) {
		return nil
	}
	return &r.cqes[head&r.cqMask]
}

// Ready is the number of completions waiting to be reaped.
func (r *Ring) Ready() int {
	return int(atomic.LoadUint32(r.cqTail) - *r.cqHead)
}

// CQAdvance marks n completions as reaped, returning their slots to the
// kernel.
func (r *Ring) CQAdvance(n int) {
	atomic.StoreUint32(r.cqHead, *r.cqHead+uint32(n))
}

// WaitCQE returns the oldest completion, waiting for one if none is ready
// (and submitting whatever is prepared on the way).
func (r *Ring) WaitCQE() (*CQE, error) {
	for {
		if cqe := r.PeekCQE(); cqe != nil {
			return cqe, nil
		}
		if _, err := r.SubmitAndWait(1); err != nil {
			return nil, err
		}
	}
}

// Completions calls fn for every ready completion, in order, then returns
// their slots to the kernel. It returns how many it reaped and never waits.
func (r *Ring) Completions(fn func(*CQE)) int {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	for i := head; i != tail; i++ {
		fn(&r.cqes[i&r.cqMask])
	}
	if n := tail - head; n > 0 {
		atomic.StoreUint32(r.cqHead, tail)
		return int(n)
	}
	return 0
}
