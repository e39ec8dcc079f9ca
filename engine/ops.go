package engine

import (
	"errors"
	"time"
	"unsafe"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
)

// writeOp is one write (or fdatasync) of a stream in flight. A disk has a
// fixed table of them, so that the write path allocates nothing: the
// request's Tag is the op's index, by which its completion finds it.
//
// Ops complete on the IO's goroutine (diskio.Request.Complete): complete
// releases the buffer, tells the stream and passes the op's IO slot to the
// next queued write. It waits for no IO and no writer: only for short
// critical sections (the queue's, the pool's, and on a disk failure the
// catalogue's).
type writeOp struct {
	d   *Disk
	idx uint64
	req diskio.Request
	one [1]*diskio.Request // req, for Submit without allocating its argument slice

	s       *stream  // the stream to tell, or nil
	buf     *mem.Buf // released when the write completes, or nil
	acct    int64    // bytes this write takes off the disk's pending count
	start   time.Time
	retries int
	slot    bool // holds one of the disk's ioMax slots
}

// shortRetries bounds how often a write the kernel cut short is continued.
// A short write without an error is the kernel's way of saying the disk is
// (nearly) full; the continuation then fails with ENOSPC or completes.
const shortRetries = 4

// writesInIO bounds the writes a disk has in its IO at once. Deep enough
// that the device stays busy through a scheduling delay of the IO's
// goroutine: on two cores busy with pushes, a completion was seen to wait
// 20 to 70 ms for a goroutine, while 16 writes of 1 MiB last about 10 ms on
// the device, which then idled (sluice bench engine, ReducePartition phase:
// 722 MiB/s with 16, 895 with 64, medians of three alternating runs; 24 and
// 32 were no better once completions refilled the IO themselves). A third
// of the IO's depth is kept for reads and fdatasyncs, which would otherwise
// queue behind the writes.
const writesInIO = 64

// initOps makes the disk's op table: one op for every buffer of its share
// (a write owns its buffer, so no more writes can be pending), plus room
// for fdatasyncs. Writers therefore never wait for an op; at most ioMax
// writes are in the IO at a time, the others wait in a FIFO.
func (d *Disk) initOps() {
	depth := d.io.Info().Depth
	nops := d.share.Limit() + 2*depth + 64
	d.ioMax = max(min(depth-depth/3, writesInIO), 1)
	d.ops = make([]writeOp, nops)
	d.freeOps = make(chan *writeOp, nops)
	d.waitQ = make([]*writeOp, nops)
	d.opDrained.L = &d.opMu
	d.completeFn = d.completeReq
	for i := range d.ops {
		op := &d.ops[i]
		op.d, op.idx = d, uint64(i)
		op.one[0] = &op.req
		d.freeOps <- op
	}
}

// getOp takes a free op.
func (d *Disk) getOp() *writeOp { return <-d.freeOps }

// queueOp hands a write to the IO, or to the FIFO when ioMax writes are
// already there: a writer holding a partition's lock never waits behind the
// hundred writes other partitions have queued (only, rarely, for room in
// the IO's own queue, which reads and fdatasyncs share). A queued write is
// submitted by the completion that frees its slot, on the IO's goroutine:
// it goes out without waiting for any goroutine to be scheduled.
func (d *Disk) queueOp(op *writeOp) {
	d.opMu.Lock()
	if d.opsClosed {
		d.opMu.Unlock()
		op.req.Err = ErrClosed
		d.complete(op)
		return
	}
	if d.inIO < d.ioMax && d.qLen == 0 {
		d.inIO++
		d.noteQueueLocked()
		d.opMu.Unlock()
		op.slot = true
		d.submitOp(op)
		return
	}
	d.waitQ[(d.qHead+d.qLen)%len(d.waitQ)] = op
	d.qLen++
	d.noteQueueLocked()
	d.opMu.Unlock()
}

// releaseSlot frees a completed write's IO slot and hands the free slots to
// queued writes. One caller at a time hands them on, in a loop: a write the
// IO refuses at once (closed, failing) completes inside submitOp and frees
// its slot again, and a loop keeps the stack flat where a call chain would
// be as deep as the queue is long.
func (d *Disk) releaseSlot() {
	d.opMu.Lock()
	d.inIO--
	if d.handing {
		d.noteQueueLocked()
		d.opMu.Unlock()
		return // the caller handing slots on takes this one too
	}
	d.handing = true
	for d.qLen > 0 && d.inIO < d.ioMax {
		next := d.waitQ[d.qHead]
		d.waitQ[d.qHead] = nil
		d.qHead = (d.qHead + 1) % len(d.waitQ)
		d.qLen--
		d.inIO++
		d.noteQueueLocked()
		d.opMu.Unlock()
		next.slot = true
		d.submitOp(next)
		d.opMu.Lock()
	}
	d.handing = false
	d.noteQueueLocked()
	d.opMu.Unlock()
}

// noteQueueLocked publishes the queue's counts, and wakes drainQueue when
// no write is queued or in the IO; called with opMu held.
func (d *Disk) noteQueueLocked() {
	d.writesWaiting.Store(int32(d.qLen))
	d.writesInIO.Store(int32(d.inIO))
	if d.qLen == 0 && d.inIO == 0 {
		d.opDrained.Broadcast()
	}
}

// drainQueue takes no more writes and waits until those queued have gone
// through the IO (the IO closes after it).
func (d *Disk) drainQueue() {
	d.opMu.Lock()
	d.opsClosed = true
	for d.qLen > 0 || d.inIO > 0 || d.handing {
		d.opDrained.Wait()
	}
	d.opMu.Unlock()
}

// submitOp submits op's request to the IO now. On a synchronous failure
// (the IO refused the request) the op completes through the same path as
// an IO error; after the disk closed, at once.
func (d *Disk) submitOp(op *writeOp) {
	op.req.Complete = d.completeFn
	op.req.Tag = op.idx
	op.start = time.Now()
	d.opMu.Lock()
	closed := d.opsClosed && !op.slot
	d.opMu.Unlock()
	if closed {
		op.req.Err = ErrClosed
		d.complete(op)
		return
	}
	if err := d.io.Submit(op.one[:]...); err != nil {
		op.req.Err = err
		d.complete(op)
	}
}

// completeReq is every op's completion function: it runs on the IO's
// goroutine, and waits for nothing but short critical sections.
func (d *Disk) completeReq(r *diskio.Request) { d.complete(&d.ops[r.Tag]) }

func (d *Disk) complete(op *writeOp) {
	r := &op.req
	err := r.Err
	if r.Op == diskio.OpWrite && errors.Is(err, diskio.ErrShortWrite) && r.N > 0 && op.retries < shortRetries &&
		r.N%max(r.File.Alignment().Offset, 1) == 0 {
		// Continue where the kernel stopped.
		op.retries++
		d.stats.shortWrites.Add(1)
		r.Buf, r.Off, r.N, r.Err = r.Buf[r.N:], r.Off+int64(r.N), 0, nil
		d.submitOp(op)
		return
	}
	switch r.Op {
	case diskio.OpWrite:
		if err == nil {
			d.stats.bytesWritten.Add(int64(len(r.Buf)))
		}
	case diskio.OpSync:
		d.stats.syncs.observe(time.Since(op.start))
	}
	if err != nil {
		d.noteFault(err)
	}
	if op.slot {
		d.releaseSlot()
		d.noteIdle()
	}
	s, buf, acct := op.s, op.buf, op.acct
	op.s, op.buf, op.acct, op.retries, op.slot = nil, nil, 0, 0, false
	op.req = diskio.Request{}
	d.freeOps <- op
	d.pending.Add(-acct)
	if buf != nil {
		buf.Release()
	}
	if s != nil {
		s.opDone(err)
	}
}

func bufAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
