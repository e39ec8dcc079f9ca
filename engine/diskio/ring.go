package diskio

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/uring"
	"golang.org/x/sys/unix"
)

// User data tags of the owner's own SQEs; request slots are small integers.
const (
	wakeTag   = 1 << 63
	cancelTag = 1<<63 | 1
)

// ringIO is the io_uring backend. One goroutine, locked to its OS thread,
// owns the ring (see the package comment of uring for why that matters with
// SINGLE_ISSUER): it moves queued requests into SQEs, submits, reaps and
// completes. Other goroutines only touch the queue under mu and wake the
// owner through an eventfd on which the ring always has a READ pending; so
// the owner can sleep in io_uring_enter waiting for a completion and still
// be woken by new work.
type ringIO struct {
	direct   bool
	depth    int // requests in flight at most
	queueMax int // requests queued at most before Submit blocks
	detail   string

	mu      sync.Mutex
	space   sync.Cond // queue drained below queueMax, or closing
	queue   []*Request
	qhead   int
	ctl     []func(*uring.Ring)
	closing bool

	efd      int
	sleeping atomic.Bool // the owner may be blocked in io_uring_enter
	woken    atomic.Bool // an eventfd write is pending
	fixed    atomic.Pointer[fixedMemory]
	// completing is set while the owner runs completions: a Submit may
	// then come from a Complete function on the owner, which must not wait
	// for the queue only the owner drains. (Another goroutine's Submit in
	// that window does not wait either: the queue's bound is soft.)
	completing atomic.Bool

	done     chan struct{} // closed when the owner exits
	closeErr error         // set by the owner before done closes

	// Owned by the owner goroutine.
	ring     *uring.Ring
	slots    []*Request
	free     []uint32
	inflight int
	efdArmed bool
	efdBuf   [8]byte
	fatal    error
	// completeFn is r.complete, bound once: a method value made in the
	// loop would be allocated on every iteration.
	completeFn func(*uring.CQE)
}

// fixedMemory is a slab registered as fixed buffers in chunks of whole
// units; a request uses buffer index i when its buffer lies inside chunk i.
type fixedMemory struct {
	base, end uintptr
	chunk     uintptr
}

var _ IO = (*ringIO)(nil)

func newRing(depth int, direct bool) (*ringIO, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("diskio: eventfd: %w", err)
	}
	r := &ringIO{
		direct:   direct,
		depth:    depth,
		queueMax: 4 * depth,
		efd:      efd,
		done:     make(chan struct{}),
		slots:    make([]*Request, depth),
		free:     make([]uint32, 0, depth),
	}
	r.space.L = &r.mu
	r.completeFn = r.complete
	for i := depth - 1; i >= 0; i-- {
		r.free = append(r.free, uint32(i))
	}
	started := make(chan error, 1)
	go r.run(started)
	if err := <-started; err != nil {
		return nil, errors.Join(err, unix.Close(efd))
	}
	return r, nil
}

// run is the owner goroutine.
func (r *ringIO) run(started chan<- error) {
	// Never unlocked: the thread ends with the goroutine, and no other
	// goroutine may ever run on a thread that issued on this ring.
	runtime.LockOSThread()
	ring, err := uring.New(uring.Params{
		Entries:      uint32(r.depth + 2), // + the eventfd read + a cancel
		CQEntries:    uint32(2 * (r.depth + 2)),
		SingleIssuer: true,
		CoopTaskrun:  true,
		DeferTaskrun: true,
	})
	if err != nil {
		started <- err
		return
	}
	r.ring = ring
	r.detail = fmt.Sprintf("single-issuer=%t coop-taskrun=%t defer-taskrun=%t", ring.SingleIssuer(), ring.CoopTaskrun(), ring.DeferTaskrun())
	started <- nil

	for {
		took, drained := r.fill()
		r.completing.Store(true)
		reaped := ring.Completions(r.completeFn)
		r.completing.Store(false)
		if drained && r.inflight == 0 {
			break
		}
		var wait uint32
		if took == 0 && reaped == 0 && ring.Pending() == 0 {
			wait = 1
			r.sleeping.Store(true)
			if r.hasWork(len(r.free) > 0, r.inflight == 0) {
				r.sleeping.Store(false)
				continue
			}
		}
		_, err := ring.SubmitAndWait(wait)
		r.sleeping.Store(false)
		if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EBUSY) {
			r.fail(err)
		}
	}
	r.shutdown()
}

// fill moves queued requests into SQEs and runs control calls. drained
// reports that the IO is closing and nothing is left in the queue.
func (r *ringIO) fill() (took int, drained bool) {
	ring := r.ring
	if !r.efdArmed && ring.SQSpace() > 0 {
		sqe := ring.GetSQE()
		sqe.PrepRead(int32(r.efd), r.efdBuf[:], 0, wakeTag)
		r.efdArmed = true
	}
	r.mu.Lock()
	for r.qhead < len(r.queue) && len(r.free) > 0 {
		sqe := ring.GetSQE()
		if sqe == nil {
			break
		}
		req := r.queue[r.qhead]
		r.queue[r.qhead] = nil
		r.qhead++
		slot := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		r.slots[slot] = req
		r.inflight++
		r.prep(sqe, req, slot)
		took++
	}
	if r.qhead == len(r.queue) {
		r.queue, r.qhead = r.queue[:0], 0
	}
	if took > 0 {
		r.space.Broadcast()
	}
	ctl := r.ctl
	r.ctl = nil
	drained = r.closing && len(r.queue) == 0
	r.mu.Unlock()
	for _, f := range ctl {
		f(ring)
	}
	return took, drained
}

// hasWork reports whether the owner has something to do besides waiting for
// a completion. Queued requests count only when a slot is free for them,
// and closing only once nothing is in flight (the owner then exits).
func (r *ringIO) hasWork(slotFree, idle bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return (slotFree && len(r.queue) > r.qhead) || len(r.ctl) > 0 || (r.closing && idle)
}

func (r *ringIO) prep(sqe *uring.SQE, req *Request, slot uint32) {
	fd := int32(req.File.fd)
	off := uint64(req.Off)
	tag := uint64(slot)
	switch req.Op {
	case OpRead:
		if idx, ok := r.fixedIndex(req.Buf); ok {
			sqe.PrepReadFixed(fd, req.Buf, off, idx, tag)
		} else {
			sqe.PrepRead(fd, req.Buf, off, tag)
		}
	case OpWrite:
		if idx, ok := r.fixedIndex(req.Buf); ok {
			sqe.PrepWriteFixed(fd, req.Buf, off, idx, tag)
		} else {
			sqe.PrepWrite(fd, req.Buf, off, tag)
		}
	case OpSync:
		sqe.PrepFsync(fd, uring.FsyncDatasync, tag)
	}
}

func (r *ringIO) fixedIndex(b []byte) (uint16, bool) {
	m := r.fixed.Load()
	if m == nil || len(b) == 0 {
		return 0, false
	}
	start := bufAddr(b)
	end := start + uintptr(len(b))
	if start < m.base || end > m.end {
		return 0, false
	}
	idx := (start - m.base) / m.chunk
	if end > m.base+(idx+1)*m.chunk {
		return 0, false // spans two registered chunks
	}
	return uint16(idx), true
}

func (r *ringIO) complete(c *uring.CQE) {
	switch c.UserData {
	case wakeTag:
		r.efdArmed = false
		r.woken.Store(false)
		return
	case cancelTag:
		return
	}
	slot := uint32(c.UserData)
	req := r.slots[slot]
	if req == nil {
		panic(fmt.Sprintf("diskio: completion for empty slot %d (res %d)", slot, c.Res))
	}
	r.slots[slot] = nil
	r.free = append(r.free, slot)
	r.inflight--
	if c.Res < 0 {
		req.finish(0, errno(c.Res))
	} else {
		req.finish(int(c.Res), nil)
	}
}

// fail handles an io_uring_enter error that is not a transient one: the
// queued requests fail with it, and the IO closes once the requests in
// flight have completed. It waits for them however long the kernel keeps
// refusing (Close with it): a request given up while in flight could still
// complete into its buffer after the buffer went to another request, and
// closing the ring's fd does not wait for the kernel to let go of them.
func (r *ringIO) fail(err error) {
	if r.fatal == nil {
		r.fatal = err
	} else {
		// The kernel keeps refusing; do not spin.
		time.Sleep(time.Millisecond)
	}
	r.mu.Lock()
	r.closing = true
	failed := r.queue[r.qhead:]
	r.queue, r.qhead = nil, 0
	r.space.Broadcast()
	r.mu.Unlock()
	for _, req := range failed {
		req.finish(0, err)
	}
}

// shutdown runs on the owner after the last request completed: it cancels
// the eventfd read, so that the kernel is done with efdBuf, and closes the
// ring.
func (r *ringIO) shutdown() {
	ring := r.ring
	var errs []error
	if r.efdArmed {
		ring.GetSQE().PrepCancel(wakeTag, cancelTag)
		for r.efdArmed {
			if _, err := ring.SubmitAndWait(1); err != nil && !errors.Is(err, unix.EAGAIN) {
				errs = append(errs, err)
				break
			}
			ring.Completions(r.completeFn)
		}
	}
	errs = append(errs, ring.Close(), unix.Close(r.efd), r.fatal)
	r.closeErr = errors.Join(errs...)
	close(r.done)
}

// eventfdOne is the 8-byte counter increment written to wake the owner
// (eventfd(2)), kept outside the function so the write does not allocate.
var eventfdOne = [8]byte{1}

func (r *ringIO) wakeOwner() {
	if r.sleeping.Load() && r.woken.CompareAndSwap(false, true) {
		for {
			_, err := unix.Write(r.efd, eventfdOne[:])
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
	}
}

func (r *ringIO) OpenFile(path string, flag int, perm os.FileMode) (*File, error) {
	return openFile(path, flag, perm, r.direct)
}

func (r *ringIO) Submit(reqs ...*Request) error {
	for _, req := range reqs {
		if err := validate(req); err != nil {
			return err
		}
	}
	if err := holdFiles(reqs); err != nil {
		return err
	}
	var rejected []*Request
	r.mu.Lock()
	for i, req := range reqs {
		for r.full() {
			r.mu.Unlock()
			r.wakeOwner()
			r.mu.Lock()
			if r.full() {
				r.space.Wait()
			}
		}
		if r.closing {
			rejected = reqs[i:]
			break
		}
		r.queue = append(r.queue, req)
	}
	r.mu.Unlock()
	r.wakeOwner()
	for _, req := range rejected {
		req.finish(0, ErrClosed)
	}
	return nil
}

// full reports whether Submit must wait for queue space; called with mu
// held.
func (r *ringIO) full() bool {
	return len(r.queue)-r.qhead >= r.queueMax && !r.closing && !r.completing.Load()
}

// RegisterMemory registers slab with the ring in chunks of whole units of at
// most 1 GiB (the kernel's limit for one fixed buffer). It runs on the owner
// goroutine, as SINGLE_ISSUER requires.
func (r *ringIO) RegisterMemory(slab []byte, unit int) (bool, error) {
	if len(slab) == 0 || unit <= 0 || len(slab)%unit != 0 {
		return false, fmt.Errorf("diskio: register %d bytes in units of %d", len(slab), unit)
	}
	if r.fixed.Load() != nil {
		return false, errors.New("diskio: memory already registered")
	}
	const chunkMax = 1 << 30
	if unit > chunkMax {
		return false, nil
	}
	chunk := (chunkMax / unit) * unit
	var bufs [][]byte
	for off := 0; off < len(slab); off += chunk {
		bufs = append(bufs, slab[off:min(off+chunk, len(slab))])
	}
	result := make(chan error, 1)
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return false, ErrClosed
	}
	r.ctl = append(r.ctl, func(ring *uring.Ring) { result <- ring.RegisterBuffers(bufs) })
	r.mu.Unlock()
	r.wakeOwner()
	if err := <-result; err != nil {
		return false, err
	}
	base := bufAddr(slab)
	r.fixed.Store(&fixedMemory{base: base, end: base + uintptr(len(slab)), chunk: uintptr(chunk)})
	return true, nil
}

func (r *ringIO) Info() Info {
	return Info{Backend: "uring", Direct: r.direct, Depth: r.depth, Registered: r.fixed.Load() != nil, Detail: r.detail}
}

func (r *ringIO) Close() error {
	r.mu.Lock()
	r.closing = true
	r.space.Broadcast()
	r.mu.Unlock()
	r.wakeOwner()
	<-r.done
	return r.closeErr
}
