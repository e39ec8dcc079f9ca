package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
)

// stream appends bytes to one file through aligned buffers from its disk's
// share of the pool: the write path of both partition writers.
//
// Bytes go into the current buffer, which covers the file range [base,
// base+bufBytes) with base aligned. A full buffer is written O_DIRECT at its
// offset and released when the write completes; up to depth writes are in
// flight. The unaligned tail stays in memory. A buffer given up early (for
// memory, or for a disk with room for more writes) is written up to its
// last whole granule, the file system's block (see flushGranule); the rest,
// fewer than gran bytes, stays in a small array, unwritten, and starts the
// next buffer: so every write but the last ends on a block, which is what
// keeps ext4 from taking the inode lock, and io_uring from handing the
// write to a worker thread, for a write into preallocated space. At the
// end the stream writes what it has padded with zeros to the alignment, and
// a later write (after recovery) continues from the last partial block by
// rewriting it. The file is preallocated ahead of the writes with
// fallocate (size hint, else growing steps), so that no O_DIRECT write
// extends it (DESIGN.md: ext4 serializes extending writes on the inode
// lock), and truncated to its exact length at the end: the formats have no
// padding.
//
// Zero copy: reserve returns the destination of the next n bytes as at most
// two slices (the end of the current buffer and the start of the next),
// which the caller fills (from a socket) and then commits or cancels.
//
// A stream may start before its file exists (a ReducePartition's file is
// created in the background, see creator): until then it only buffers,
// whatever needs the file waits for it (awaitFile), and the flusher passes
// it by.
//
// A stream has one owner at a time (its writer, under the writer's lock);
// the disk's pressure flusher may take mu to flush an idle stream's partial
// buffer. Completions arrive on the IO's goroutine, and only touch the
// atomics and the wake channel.
type stream struct {
	d        *Disk
	f        *diskio.File
	align    int64 // offset alignment: 1 for buffered files
	gran     int64 // early writes end on a multiple of it (see flushGranule)
	bufBytes int
	depth    int32 // writes in flight at most
	maxSpare int

	mu      sync.Mutex
	cur     *mem.Buf
	curBase int64 // file offset of cur's first byte; aligned
	curLen  int   // committed bytes in cur
	carried int   // bytes at cur's start that came from the tail (written or not: see writtenEnd)
	resv    int   // bytes reserved after curLen
	next    *mem.Buf
	spares  []*mem.Buf
	tail    []byte // the last partial block while cur is nil
	tailLen int
	length  int64 // logical length: committed bytes
	// submittedEnd is the end of the furthest write submitted; a write that
	// starts before it rewrites a block still in flight and waits for it.
	submittedEnd int64
	writtenEnd   int64 // logical bytes handed to writes, for the pending count
	allocated    int64 // preallocated (file size after fallocate)
	hint         int64 // expected final size, 0 if unknown
	// fileReady is closed once f is set, or its creation failed (then err
	// is set); nil when the stream started with its file.
	fileReady  chan struct{}
	noPrealloc bool
	closed     bool
	parts      [2][]byte

	held       atomic.Int64 // bytes in cur, for the flusher's ordering
	spareCount atomic.Int32
	inflight   atomic.Int32
	wake       chan struct{}
	// err is the first write error, set once: every push reads it, so it
	// is a load, not a lock.
	err atomic.Pointer[error]
}

// Preallocation steps when the final size is unknown: start small (a
// ReducePartition of a small dataset stays small), double, cap at the step
// DESIGN.md recommends.
const (
	preallocMin = 1 << 20
	preallocMax = 64 << 20
)

func newStream(d *Disk, f *diskio.File, depth int, hint int64, spares int) *stream {
	al := d.align // the file is not created yet: the disk's alignment
	if f != nil {
		al = f.Alignment()
	}
	a := int64(max(al.Offset, 1))
	gran := d.flushGranule(a)
	s := &stream{
		d:        d,
		f:        f,
		align:    a,
		gran:     gran,
		bufBytes: d.bufBytes,
		depth:    int32(depth),
		maxSpare: spares,
		tail:     make([]byte, gran),
		wake:     make(chan struct{}, 1),
		hint:     hint,
	}
	s.spares = make([]*mem.Buf, 0, s.maxSpare+1)
	return s
}

// maxReserve is the largest reservation: after a flush the tail (< gran
// bytes) occupies the start of the new buffer, so one buffer always has room
// for this much.
func (s *stream) maxReserve() int { return s.bufBytes - int(s.gran) }

// flushGranule is where a stream of a file with DIO offset alignment a ends
// its early writes: the file system's block when it is a multiple of a that
// divides the buffers (and is small beside them), else a.
func (d *Disk) flushGranule(a int64) int64 {
	b := d.fsBlock
	if a > 1 && b > a && b%a == 0 && int64(d.bufBytes)%b == 0 && b <= int64(d.bufBytes)/4 {
		return b
	}
	return a
}

// resume positions a fresh stream at the end of an existing file of length
// n whose last partial block is tail.
func (s *stream) resume(n int64, tail []byte) {
	s.length, s.writtenEnd, s.allocated = n, n, n
	s.tailLen = copy(s.tail, tail)
}

// awaitFile waits until the stream's file exists.
func (s *stream) awaitFile() error {
	if s.fileReady != nil {
		<-s.fileReady
	}
	if s.f == nil {
		if err := s.failed(); err != nil {
			return err
		}
		return ErrClosed
	}
	return nil
}

// hasFile reports, without waiting, whether the file exists.
func (s *stream) hasFile() bool {
	if s.fileReady == nil {
		return true
	}
	select {
	case <-s.fileReady:
		return s.f != nil
	default:
		return false
	}
}

func (s *stream) failed() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *stream) setErr(err error) {
	e := wrapFault(err)
	s.err.CompareAndSwap(nil, &e)
}

// opDone is called, on the IO's goroutine, when one of the stream's ops
// completed.
func (s *stream) opDone(err error) {
	if err != nil {
		s.setErr(err)
	}
	s.inflight.Add(-1)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// waitInflight waits until at most n ops are in flight.
func (s *stream) waitInflight(n int32) {
	for s.inflight.Load() > n {
		<-s.wake
	}
}

// takeBuf returns an empty buffer without waiting, or nil.
func (s *stream) takeBuf() *mem.Buf {
	if n := len(s.spares); n > 0 {
		b := s.spares[n-1]
		s.spares = s.spares[:n-1]
		s.spareCount.Store(int32(n - 1))
		return b
	}
	return s.d.share.TryGet()
}

// waitBuf returns an empty buffer, waiting for one (FIFO among the disk's
// writers) when the share is exhausted, after asking the disk to flush idle
// buffers. Called with mu held; mu is released while waiting. The stream
// must hold no partial buffer then (the caller flushed it), so that waiting
// writers never hold memory the others wait for.
func (s *stream) waitBuf(ctx context.Context) (*mem.Buf, error) {
	if b := s.takeBuf(); b != nil {
		return b, nil
	}
	s.d.stats.bufferWaits.Add(1)
	s.d.waiters.Add(1)
	s.d.signalPressure()
	s.mu.Unlock()
	b, err := s.d.share.Get(ctx)
	s.d.waiters.Add(-1)
	s.mu.Lock()
	if err != nil {
		return nil, fmt.Errorf("engine: waiting for a write buffer: %w", err)
	}
	return b, nil
}

// canTake reports whether n more bytes fit without waiting: in the current
// buffer, the spares, and buffers the share gives at once (taken as
// spares). A writer that must not wait under a lock asks first and, when
// the answer is no, waits for a buffer outside the lock (waitSpare).
func (s *stream) canTake(n int) bool {
	avail := s.heldRoom()
	for avail < n {
		b := s.d.share.TryGet()
		if b == nil {
			return false
		}
		s.addSpare(b)
		avail += s.bufBytes
	}
	return true
}

// heldRoom is the room in the buffers the stream holds.
func (s *stream) heldRoom() int {
	avail := len(s.spares) * s.bufBytes
	if s.cur != nil {
		avail += s.bufBytes - s.curLen
	} else {
		avail -= s.tailLen
	}
	return avail
}

// canTakeHeld reports whether n more bytes fit in the buffers held.
func (s *stream) canTakeHeld(n int) bool { return s.heldRoom() >= n }

func (s *stream) addSpare(b *mem.Buf) {
	s.spares = append(s.spares, b)
	s.spareCount.Store(int32(len(s.spares)))
}

// trimSpares gives back spare buffers beyond maxSpare: buffers taken for
// one append (canTake) must not linger in a partition that does not need
// them, when a thousand partitions share the memory.
func (s *stream) trimSpares() {
	for len(s.spares) > s.maxSpare {
		n := len(s.spares) - 1
		s.spares[n].Release()
		s.spares[n] = nil
		s.spares = s.spares[:n]
	}
	s.spareCount.Store(int32(len(s.spares)))
}

// noteFill writes the buffer out early once it holds the early-flush
// threshold, when the disk has room for more writes. The writer does it
// itself when the write would not wait (for the file, or for the stream's
// writes in flight), rather than wait for the flusher goroutine to be
// scheduled: on cores busy with pushes, that took tens of milliseconds
// while the device idled. Otherwise the flusher takes it later.
func (s *stream) noteFill(before int) {
	min := s.bufBytes / idleFlushFraction
	if s.curLen-s.carried < min || s.d.ioRoom() == 0 {
		return
	}
	if s.hasFile() && !s.writeWaits() {
		s.flushEarly(int64(min))
		return
	}
	if before-s.carried < min {
		s.d.noteIdle()
	}
}

// writeWaits reports whether writing cur now would wait for writes of the
// stream in flight (see submitWrite).
func (s *stream) writeWaits() bool {
	n := s.inflight.Load()
	return n >= s.depth || (n > 0 && s.curBase < s.submittedEnd)
}

// waitShare waits for a buffer of the disk's share, asking the flusher for
// memory; the caller holds no lock.
func (d *Disk) waitShare(ctx context.Context) (*mem.Buf, error) {
	if b := d.share.TryGet(); b != nil {
		return b, nil
	}
	d.stats.bufferWaits.Add(1)
	d.waiters.Add(1)
	d.signalPressure()
	b, err := d.share.Get(ctx)
	d.waiters.Add(-1)
	if err != nil {
		return nil, fmt.Errorf("engine: waiting for a write buffer: %w", err)
	}
	return b, nil
}

// ensureCur makes sure there is a current buffer, starting it with the
// carried tail block.
func (s *stream) ensureCur(ctx context.Context) error {
	if s.cur != nil {
		return nil
	}
	b, err := s.waitBuf(ctx)
	if err != nil {
		return err
	}
	if s.closed {
		b.Release()
		return ErrAborted
	}
	s.startCur(b)
	return nil
}

func (s *stream) startCur(b *mem.Buf) {
	s.cur = b
	copy(b.Bytes(), s.tail[:s.tailLen])
	s.curBase = s.length - int64(s.tailLen)
	s.curLen, s.carried, s.tailLen = s.tailLen, s.tailLen, 0
	s.held.Store(int64(s.curLen))
}

// available is how many bytes the stream can take without waiting, after
// topping up its spare buffers without waiting.
func (s *stream) available() int64 {
	for len(s.spares) < s.maxSpare {
		b := s.d.share.TryGet()
		if b == nil {
			break
		}
		s.spares = append(s.spares, b)
		s.spareCount.Store(int32(len(s.spares)))
	}
	n := int64(len(s.spares)) * int64(s.bufBytes)
	if s.cur != nil {
		n += int64(s.bufBytes - s.curLen)
	} else if n > 0 {
		n -= int64(s.tailLen)
	}
	return n
}

// waitAvailable waits until the stream can take at least one byte without
// waiting. Called with mu held.
func (s *stream) waitAvailable(ctx context.Context) error {
	if err := s.failed(); err != nil {
		return err
	}
	if s.available() > 0 {
		return nil
	}
	// No room and no spare: cur is nil or full (a full one is written at
	// once), so waiting holds no partial buffer.
	b, err := s.waitBuf(ctx)
	if err != nil {
		return err
	}
	s.spares = append(s.spares, b)
	s.spareCount.Store(int32(len(s.spares)))
	return nil
}

// reserve returns the destination of the next n bytes, n <= maxReserve.
func (s *stream) reserve(ctx context.Context, n int) ([][]byte, error) {
	if err := s.failed(); err != nil {
		return nil, err
	}
	if s.closed {
		return nil, ErrAborted
	}
	if s.resv != 0 {
		return nil, errors.New("engine: a reservation is already open")
	}
	if n <= 0 || n > s.maxReserve() {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, s.maxReserve())
	}
	if err := s.ensureCur(ctx); err != nil {
		return nil, err
	}
	room := s.bufBytes - s.curLen
	if n <= room {
		s.parts[0] = s.cur.Bytes()[s.curLen : s.curLen+n]
		s.resv = n
		return s.parts[:1], nil
	}
	if next := s.takeBuf(); next != nil {
		s.next = next
		s.parts[0] = s.cur.Bytes()[s.curLen:]
		s.parts[1] = next.Bytes()[:n-room]
		s.resv = n
		return s.parts[:2], nil
	}
	// Do not hold a partial buffer while waiting: write it out up to its
	// last block, then start a fresh buffer with the rest, which then has
	// room for n (n <= maxReserve).
	if err := s.flushEarlyCur(); err != nil {
		return nil, err
	}
	if err := s.ensureCur(ctx); err != nil {
		return nil, err
	}
	s.parts[0] = s.cur.Bytes()[s.curLen : s.curLen+n]
	s.resv = n
	return s.parts[:1], nil
}

// commitReserved makes the reserved bytes part of the stream.
func (s *stream) commitReserved() error {
	n := s.resv
	s.resv = 0
	s.length += int64(n)
	s.d.pending.Add(int64(n))
	if s.next != nil {
		room := s.bufBytes - s.curLen
		s.curLen = s.bufBytes
		next := s.next
		s.next = nil
		base := s.curBase + int64(s.bufBytes)
		err := s.submitCur()
		s.cur, s.curBase, s.curLen, s.carried = next, base, n-room, 0
		s.held.Store(int64(s.curLen))
		s.trimSpares()
		return err
	}
	before := s.curLen
	s.curLen += n
	s.held.Store(int64(s.curLen))
	if s.curLen == s.bufBytes {
		err := s.submitCur()
		s.trimSpares()
		return err
	}
	s.noteFill(before)
	s.trimSpares()
	return nil
}

// cancelReserved forgets the reservation.
func (s *stream) cancelReserved() {
	s.resv = 0
	if s.closed {
		s.dropBuffers() // kept by abort for this reservation
		return
	}
	if s.next != nil {
		s.addSpare(s.next)
		s.next = nil
		s.trimSpares()
	}
}

// appendBytes copies p to the end of the stream.
func (s *stream) appendBytes(ctx context.Context, p []byte) error {
	if err := s.failed(); err != nil {
		return err
	}
	if s.closed {
		return ErrAborted
	}
	for len(p) > 0 {
		if err := s.ensureCur(ctx); err != nil {
			return err
		}
		k := copy(s.cur.Bytes()[s.curLen:], p)
		p = p[k:]
		s.curLen += k
		s.length += int64(k)
		s.d.pending.Add(int64(k))
		s.held.Store(int64(s.curLen))
		if s.curLen == s.bufBytes {
			if err := s.submitCur(); err != nil {
				return err
			}
		}
	}
	s.trimSpares()
	return nil
}

// flushCur writes the current buffer out even if it is not full (padded),
// keeping its last partial block as the tail. A buffer with nothing new in
// it is simply given back.
func (s *stream) flushCur() error {
	if s.cur == nil {
		return nil
	}
	if s.curBase+int64(s.curLen) <= s.writtenEnd {
		b, n, _ := s.takeCur()
		s.tailLen = copy(s.tail, b.Bytes()[:n])
		b.Release()
		return nil
	}
	return s.submitCur()
}

// takeCur detaches the current buffer from the stream, returning it with
// its committed length and file offset.
func (s *stream) takeCur() (b *mem.Buf, n int, base int64) {
	b, n, base = s.cur, s.curLen, s.curBase
	s.cur, s.curLen, s.carried = nil, 0, 0
	s.held.Store(0)
	return b, n, base
}

// flushEarlyCur gives the current buffer up before it is full: it writes
// the buffer's whole blocks of gran bytes and keeps the rest, fewer than
// gran bytes and not written, as the tail.
func (s *stream) flushEarlyCur() error {
	if s.cur == nil {
		return nil
	}
	b, n, base := s.takeCur()
	data := b.Bytes()
	cut := int(alignDown(base+int64(n), s.gran) - base)
	if cut <= 0 {
		s.tailLen = copy(s.tail, data[:n])
		b.Release()
		return nil
	}
	s.tailLen = copy(s.tail, data[cut:n])
	return s.submitWrite(b, data[:cut], base, base+int64(cut))
}

// submitCur writes cur (padded to the alignment with zeros) at its offset;
// the write owns the buffer from here on.
func (s *stream) submitCur() error {
	b, n, base := s.takeCur()
	data := b.Bytes()
	padded := int(roundUp(int64(n), s.align))
	// Zero the padding: stale bytes of the buffer's previous use could
	// look like valid items to a recovery scan of this file.
	clear(data[n:padded])
	if n < s.bufBytes {
		start := int(alignDown(int64(n), s.align))
		s.tailLen = copy(s.tail, data[start:n])
	} else {
		s.tailLen = 0
	}
	return s.submitWrite(b, data[:padded], base, base+int64(n))
}

// submitWrite writes data (owned by buf, released when done) at off; end
// is the logical end of the bytes it carries.
func (s *stream) submitWrite(buf *mem.Buf, data []byte, off, end int64) error {
	if off < s.submittedEnd {
		// It rewrites the tail block of a write still in flight: the two
		// must not race.
		s.waitInflight(0)
	}
	s.waitInflight(s.depth - 1)
	if err := s.failed(); err != nil {
		buf.Release()
		return err
	}
	if err := s.awaitFile(); err != nil {
		buf.Release()
		return err
	}
	if err := s.preallocate(off + int64(len(data))); err != nil {
		buf.Release()
		s.d.noteFault(err)
		s.setErr(err)
		return s.failed()
	}
	op := s.d.getOp()
	op.req = diskio.Request{Op: diskio.OpWrite, File: s.f, Buf: data, Off: off}
	op.s, op.buf = s, buf
	if end > s.writtenEnd {
		op.acct = end - max(off, s.writtenEnd)
		s.writtenEnd = end
	}
	s.inflight.Add(1)
	s.submittedEnd = max(s.submittedEnd, off+int64(len(data)))
	s.d.queueOp(op)
	return nil
}

// preallocate makes sure the file is preallocated up to at least end.
func (s *stream) preallocate(end int64) error {
	if end <= s.allocated || s.noPrealloc {
		return nil
	}
	if s.allocated > 0 && s.inflight.Load() > 0 {
		// fallocate(2) on ext4 first waits for every O_DIRECT write in
		// flight on the file (inode_dio_wait), and the caller may hold a
		// partition lock others wait for, with hundreds of writes queued
		// ahead: this write extends the file instead (ext4 serializes
		// extending writes of one file, not of the disk), and the next step
		// is preallocated once the stream's writes have drained.
		s.d.stats.extendingWrites.Add(1)
		return nil
	}
	target := end
	if s.hint > s.allocated {
		target = max(target, roundUp(s.hint, s.align))
	}
	step := min(max(s.allocated, preallocMin), preallocMax)
	target = max(target, roundUp(s.allocated+step, s.align))
	err := s.f.Preallocate(s.allocated, target-s.allocated)
	switch {
	case err == nil:
		s.allocated = target
		s.d.stats.preallocations.Add(1)
		return nil
	case errors.Is(err, syscall.EOPNOTSUPP):
		s.noPrealloc = true
		return nil
	case errors.Is(err, syscall.ENOSPC) && end < target:
		// Not room for a whole step; maybe for what this write needs.
		if err2 := s.f.Preallocate(s.allocated, end-s.allocated); err2 == nil {
			s.allocated = end
			return nil
		}
	}
	return err
}

// flushData writes everything out and waits for it: the data is on its way
// to the disk but not synced.
func (s *stream) flushData() error {
	if s.resv != 0 {
		return errors.New("engine: a reservation is still open")
	}
	if err := s.failed(); err != nil {
		return err
	}
	if s.cur == nil && s.length > s.writtenEnd {
		if err := s.ensureCur(ctxBackground); err != nil {
			return err
		}
	}
	if s.cur != nil {
		if err := s.flushCur(); err != nil {
			return err
		}
	}
	s.waitInflight(0)
	return s.failed()
}

// finish writes everything, truncates the file to its exact length and
// fdatasyncs it through the IO.
func (s *stream) finish() error {
	if err := s.flushData(); err != nil {
		return err
	}
	s.releaseSpares()
	if err := s.awaitFile(); err != nil {
		return err
	}
	if err := s.f.Truncate(s.length); err != nil {
		s.d.noteFault(err)
		s.setErr(err)
		return s.failed()
	}
	return s.sync()
}

// sync fdatasyncs the file through the IO.
func (s *stream) sync() error {
	if err := s.awaitFile(); err != nil {
		return err
	}
	op := s.d.getOp()
	op.req = diskio.Request{Op: diskio.OpSync, File: s.f}
	op.s = s
	s.inflight.Add(1)
	s.d.submitOp(op)
	s.waitInflight(0)
	return s.failed()
}

func (s *stream) releaseSpares() {
	for _, b := range s.spares {
		b.Release()
	}
	s.spares = s.spares[:0]
	s.spareCount.Store(0)
}

// abort drops every buffer and waits for the writes in flight; the owner
// then removes the file. The buffers of an open reservation stay: its
// caller may be filling them outside the lock (a MapWriter's socket read),
// and they go back when it commits or cancels (cancelReserved), so that no
// other writer is handed memory still being written.
func (s *stream) abort() {
	s.closed = true
	s.d.pending.Add(-(s.length - s.writtenEnd))
	s.writtenEnd = s.length
	if s.resv == 0 {
		s.dropBuffers()
	}
	s.releaseSpares()
	s.waitInflight(0)
}

// dropBuffers releases the current and next buffers.
func (s *stream) dropBuffers() {
	if s.next != nil {
		s.next.Release()
		s.next = nil
	}
	if s.cur != nil {
		b, _, _ := s.takeCur()
		b.Release()
	}
}

// flushEarly writes the current buffer out early for an idle disk, if it
// holds at least min new bytes. Called by the disk's flusher with mu held.
func (s *stream) flushEarly(min int64) bool {
	if s.closed || s.resv != 0 || s.cur == nil || int64(s.curLen-s.carried) < min || s.failed() != nil || !s.hasFile() {
		return false
	}
	if s.flushEarlyCur() != nil {
		return false
	}
	s.d.stats.idleFlushes.Add(1)
	return true
}

// relieve gives memory back under pressure: spare buffers, and the current
// buffer written out early. It reports whether it freed anything. Called by
// the disk's flusher with mu held.
func (s *stream) relieve() bool {
	if s.closed || s.resv != 0 || s.failed() != nil || !s.hasFile() {
		return false
	}
	freed := len(s.spares) > 0
	s.releaseSpares()
	if s.cur != nil {
		if err := s.flushEarlyCur(); err == nil {
			freed = true
		}
		s.d.stats.pressureFlushes.Add(1)
	}
	return freed
}
