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
// request's Tag is the op's index, and the reaper finds the op from it.
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
	slot    bool // holds one of the submitter's IO slots
}

// shortRetries bounds how often a write the kernel cut short is continued.
// A short write without an error is the kernel's way of saying the disk is
// (nearly) full; the continuation then fails with ENOSPC or completes.
const shortRetries = 4

// writesInIO bounds the writes a disk has in its IO at once. Deep enough
// that the device stays busy through a scheduling delay of the goroutines
// that feed it: on two cores busy with pushes, a completion was seen to
// wait 20 to 70 ms for its goroutine, while 16 writes of 1 MiB last about
// 10 ms on the device, which then idled (sluice bench engine, ReducePartition
// phase: 722 MiB/s with 16, 895 with 64, medians of three alternating
// runs). A third of the IO's depth is kept for reads and fdatasyncs, which
// would otherwise queue behind the writes.
const writesInIO = 64

// initOps makes the disk's op table: one op for every buffer of its share
// (a write owns its buffer, so no more writes can be pending), plus room
// for fdatasyncs. Writers therefore never wait for an op; the submitter
// goroutine feeds them to the IO at most ioMax at a time.
func (d *Disk) initOps() {
	depth := d.io.Info().Depth
	nops := d.share.Limit() + 2*depth + 64
	d.ioMax = max(min(depth-depth/3, writesInIO), 1)
	d.ops = make([]writeOp, nops)
	d.freeOps = make(chan *writeOp, nops)
	d.opDone = make(chan *diskio.Request, nops)
	d.submitQ = make(chan *writeOp, nops)
	d.ioSlots = make(chan struct{}, d.ioMax)
	for i := range d.ops {
		op := &d.ops[i]
		op.d, op.idx = d, uint64(i)
		op.one[0] = &op.req
		d.freeOps <- op
	}
}

// getOp takes a free op.
func (d *Disk) getOp() *writeOp { return <-d.freeOps }

// queueOp hands a write to the submitter, in order, without waiting for
// the IO: a writer holding a partition's lock must not wait behind the
// hundred writes other partitions have queued.
func (d *Disk) queueOp(op *writeOp) {
	op.req.Done = d.opDone
	op.req.Tag = op.idx
	d.opMu.RLock()
	if d.opsClosed {
		d.opMu.RUnlock()
		op.req.Err = ErrClosed
		d.complete(op)
		return
	}
	d.submitQ <- op
	d.opMu.RUnlock()
}

// submitter hands queued writes to the IO, keeping at most ioMax of them
// there (enough to keep the device busy, few enough that a request does
// not wait behind hundreds of megabytes). It ends when the queue closes.
func (d *Disk) submitter() {
	defer close(d.submitterDone)
	for op := range d.submitQ {
		d.ioSlots <- struct{}{}
		op.slot = true
		d.submitOp(op)
	}
}

// submitOp submits op's request to the IO now. On a synchronous failure
// (the IO refused the request) the op completes through the same path as
// an IO error; after the disk closed, at once.
func (d *Disk) submitOp(op *writeOp) {
	op.req.Done = d.opDone
	op.req.Tag = op.idx
	op.start = time.Now()
	d.opMu.RLock()
	closed := d.opsClosed && !op.slot
	d.opMu.RUnlock()
	if closed {
		op.req.Err = ErrClosed
		d.complete(op)
		return
	}
	if err := d.io.Submit(op.one[:]...); err != nil {
		op.req.Err = err
		d.opDone <- &op.req
	}
}

// reap completes the disk's ops: it releases their buffers at once (so a
// writer that went quiet does not pin memory), accounts them and tells
// their streams. It runs until opDone closes.
func (d *Disk) reap() {
	defer close(d.reaperDone)
	for {
		select {
		case r := <-d.opDone:
			d.complete(&d.ops[r.Tag])
		case <-d.reapStop:
			// The IO is closed: every request it had is completed, and
			// its completion sent here. Take them all.
			for len(d.freeOps) < len(d.ops) {
				r := <-d.opDone
				d.complete(&d.ops[r.Tag])
			}
			return
		}
	}
}

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
		<-d.ioSlots
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
