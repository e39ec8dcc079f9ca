package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// tryCtx is an ended context: engine calls given it take what is at hand
// and return its error instead of waiting (a buffer pool hands out a free
// buffer before it looks at the context). The read loop uses it so that it
// never waits for engine memory.
var tryCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// wouldWait reports whether err is tryCtx's: the engine needed to wait.
func wouldWait(err error) bool { return errors.Is(err, context.Canceled) }

// writeChan is a MapPartition write channel (PROTOCOL.md, "Write channel").
type writeChan struct {
	ch *channel

	w        *engine.MapWriter
	maxBuf   int    // WRITE_OPEN's max buffer bytes
	subs     uint32 // subpartition count
	inRegion bool
	regions  uint32 // regions finished
	regBufs  uint32 // buffers of the open region
	regBytes uint64
	totals   wire.WriteTotals
	hdr      [wire.BufferHeaderSize]byte
}

// creditLowWater: a write channel's credit is topped up when what is left
// falls below this (or below two buffers), not after every buffer.
const creditLowWater = 1 << 20

func (wc *writeChan) run(o *op) {
	ch := wc.ch
	switch o.kind {
	case opOpen:
		wc.open(o.open)
	case opRegionStart:
		wc.regionStart(&o.regionStart)
	case opData:
		wc.stagedData(o)
	case opRegionFinish:
		wc.regionFinish(&o.regionFinish)
	case opWriteFinish:
		wc.finish(&o.writeFinish)
	case opGrant:
		ch.mu.Lock()
		ch.waitingMem = false
		ch.mu.Unlock()
		wc.grant()
	case opWait:
		if wc.w != nil {
			if err := wc.w.WaitAvailable(ch.ctx); err != nil && ch.ctx.Err() == nil {
				ch.fail(err, opWrite)
			}
		}
		ch.mu.Lock()
		ch.waitingEngine = false
		ch.mu.Unlock()
		wc.grant()
	case opClose, opDrop:
		wc.abort()
		ch.c.mem.release(int64(wc.releaseCredit()))
		if o.kind == opClose {
			ch.c.out.sendChannelClosed(ch.id)
		}
	}
}

func (wc *writeChan) open(req *openReq) {
	ch, c := wc.ch, wc.ch.c
	m := &req.write
	wc.maxBuf, wc.subs = int(m.MaxBufferBytes), m.Subpartitions
	if ch.refuseItem("max buffer bytes", wc.maxBuf) {
		return
	}
	w, err := c.s.store.CreateMap(ch.ctx, engine.MapSpec{Job: req.job, Dataset: req.ds, Map: m.Map, Attempt: m.Attempt,
		Subpartitions: m.Subpartitions, Codec: m.Codec, SizeHint: int64(m.SizeHint)})
	if err != nil {
		ch.fail(err, opWrite)
		return
	}
	wc.w = w
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ended {
		return // closed while opening: opClose/opDrop follows and aborts
	}
	first := wc.creditWantLocked()
	ch.granted += first
	c.out.sendMsg(ch.id, &wire.WriteOpened{Credit: uint32(first)})
	if first == 0 {
		wc.needCreditLocked()
	}
}

// creditWantLocked computes a grant within the connection's memory and
// takes that memory: what the engine writer takes without waiting beyond
// the credit outstanding, and at least what the client needs to send a
// buffer of maxBuf. The engine may hold less than that without waiting
// (buffers larger than its spare pool buffers, or room it has just given
// to earlier buffers): the body then waits in connection memory for the
// engine. Nothing is granted while the engine has no room at all, which
// is the back-pressure. Called by the owner with mu held.
func (wc *writeChan) creditWantLocked() uint64 {
	ch := wc.ch
	out := ch.outstandingLocked()
	avail := wc.w.Available()
	if avail <= 0 {
		return 0
	}
	var want uint64
	if avail > int64(out) {
		want = min(uint64(avail)-out, 1<<32-1)
	}
	if out >= uint64(wc.maxBuf) && want < uint64(wc.maxBuf) {
		return 0 // not worth a frame yet
	}
	need := int64(wc.maxBuf) - int64(out)
	want = max(want, uint64(max(need, 0)))
	return uint64(ch.c.mem.take(int64(want), need))
}

// needCreditLocked is called when the client cannot send its next buffer:
// wait for engine memory (on the worker) or for connection memory.
func (wc *writeChan) needCreditLocked() {
	ch := wc.ch
	if ch.ended || ch.outstandingLocked() >= uint64(wc.maxBuf) {
		return
	}
	if wc.w.Available() > 0 {
		// The engine has room, so the grant failed for the connection's
		// memory.
		if !ch.waitingMem {
			ch.waitingMem = true
			ch.c.mem.wait(ch)
		}
		return
	}
	if !ch.waitingEngine {
		ch.waitingEngine = true
		ch.enqueueLocked(op{kind: opWait})
	}
}

// grant tops the channel's credit up if it runs low (owner only).
func (wc *writeChan) grant() {
	if wc.w == nil {
		return
	}
	ch := wc.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ended {
		return
	}
	if out := ch.outstandingLocked(); out >= creditLowWater && out >= 2*uint64(wc.maxBuf) {
		return
	}
	n := wc.creditWantLocked()
	ch.grantLocked(n)
	if n == 0 {
		wc.needCreditLocked()
	}
}

// releaseCredit forgets the credit outstanding (the channel ended) and
// returns it, for the connection's memory.
func (wc *writeChan) releaseCredit() uint64 {
	ch := wc.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	out := ch.outstandingLocked()
	ch.consumed = ch.granted
	return out
}

func (wc *writeChan) regionStart(m *wire.RegionStart) {
	ch := wc.ch
	switch {
	case wc.w == nil:
		ch.end(wire.CodeOutOfOrder, "REGION_START before the channel is open")
	case wc.inRegion:
		ch.end(wire.CodeOutOfOrder, fmt.Sprintf("REGION_START of region %d inside region %d", m.Region, wc.regions))
	case m.Region != wc.regions:
		ch.end(wire.CodeOutOfOrder, fmt.Sprintf("REGION_START of region %d, the next is %d", m.Region, wc.regions))
	default:
		if err := wc.w.StartRegion(m.Broadcast); err != nil {
			ch.fail(err, opWrite)
			return
		}
		wc.inRegion, wc.regBufs, wc.regBytes = true, 0, 0
	}
}

// checkData checks a WRITE_DATA of n bytes against the state machine.
func (wc *writeChan) checkData(n int) error {
	switch {
	case wc.w == nil || !wc.inRegion:
		return &wire.Error{Code: wire.CodeOutOfOrder, Msg: "WRITE_DATA outside a region"}
	case n > wc.maxBuf:
		return &wire.Error{Code: wire.CodeInvalidArgument, Msg: fmt.Sprintf("a buffer of %d bytes, above WRITE_OPEN's max buffer bytes %d", n, wc.maxBuf)}
	}
	return nil
}

// counted records a stored buffer the engine took.
func (wc *writeChan) counted(hdr []byte, n int) {
	wc.totals.Add(hdr, n)
	wc.regBufs++
	wc.regBytes += uint64(n)
}

// writeData handles WRITE_DATA in the read loop: the body goes straight
// into the engine's buffer when the writer has room at hand, else into
// staging memory for the channel's worker.
func (c *conn) writeData(h *wire.Header) error {
	ch := c.lookup(h.Channel)
	if ch == nil || ch.w == nil {
		if ch != nil {
			ch.end(wire.CodeOutOfOrder, "WRITE_DATA on a "+ch.kind.String()+" channel")
		}
		return nil // not open: discarded with its body
	}
	n := int(h.Length)
	ch.mu.Lock()
	if ch.ended {
		ch.mu.Unlock()
		return nil
	}
	if !ch.creditCheckLocked(n) {
		c.s.st.creditViolations.Add(1)
		ch.endLocked(wire.CodeCreditExceeded, fmt.Sprintf("WRITE_DATA of %d bytes with %d bytes of credit", n, ch.outstandingLocked()))
		ch.mu.Unlock()
		return nil
	}
	if !ch.claimLocked() {
		ch.mu.Unlock()
		return c.queueData(ch, h, nil)
	}
	ch.mu.Unlock()
	err := ch.w.inlineData(h)
	ch.release()
	return err
}

// queueData stages the body for the channel's worker.
func (c *conn) queueData(ch *channel, h *wire.Header, hdr []byte) error {
	o, err := c.stageBody(h, hdr)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	ch.enqueueLocked(o)
	ch.mu.Unlock()
	return nil
}

// inlineData is the zero-copy path; the read loop owns the channel.
func (wc *writeChan) inlineData(h *wire.Header) error {
	ch, c := wc.ch, wc.ch.c
	n := int(h.Length)
	if err := wc.checkData(n); err != nil {
		ch.fail(err, opWrite)
		c.mem.release(int64(n))
		return nil
	}
	var parts [][]byte
	var err error
	if n <= wc.w.MaxReserve() {
		parts, err = wc.w.Reserve(tryCtx, n)
	}
	if parts == nil {
		if err != nil && !wouldWait(err) {
			ch.fail(err, opWrite)
			c.mem.release(int64(n))
			return nil
		}
		// The engine gave back the memory this credit stood for, or the
		// buffer is larger than one write buffer: the worker takes it.
		// The read loop owns the channel: release starts the worker for
		// the queued operation.
		o, err := c.stageBody(h, nil)
		if err != nil {
			return err
		}
		ch.mu.Lock()
		ch.ops = append(ch.ops, o)
		ch.mu.Unlock()
		return nil
	}
	for _, p := range parts {
		if err := c.fr.ReadFull(p); err != nil {
			wc.w.Cancel()
			return err
		}
	}
	// The header is copied out before Commit: once committed, the buffer
	// is the engine's, which may write it out and hand it to another
	// writer before the totals read it.
	k := copy(wc.hdr[:], parts[0])
	if k < wire.BufferHeaderSize {
		copy(wc.hdr[k:], parts[1])
	}
	if err := wc.w.Commit(); err != nil {
		ch.fail(err, opWrite)
		c.mem.release(int64(n))
		return nil
	}
	wc.counted(wc.hdr[:], n)
	c.mem.release(int64(n))
	c.s.st.bytesReceived.Add(int64(n))
	c.s.st.zeroCopyBytes.Add(int64(n))
	wc.grant()
	return nil
}

// stagedData hands a staged buffer to the engine (the worker; may wait).
func (wc *writeChan) stagedData(o *op) {
	ch, c := wc.ch, wc.ch.c
	defer func() {
		c.stage.release(o.stage, o.n)
		c.mem.release(int64(o.n))
	}()
	if err := wc.checkData(o.n); err != nil {
		ch.fail(err, opWrite)
		return
	}
	if err := wc.w.Write(ch.ctx, o.buf); err != nil {
		if ch.ctx.Err() == nil {
			ch.fail(err, opWrite)
		}
		return
	}
	wc.counted(o.buf[:wire.BufferHeaderSize], o.n)
	c.s.st.bytesReceived.Add(int64(o.n))
	wc.grant()
}

func (wc *writeChan) regionFinish(m *wire.RegionFinish) {
	ch := wc.ch
	switch {
	case wc.w == nil || !wc.inRegion:
		ch.end(wire.CodeOutOfOrder, "REGION_FINISH outside a region")
		return
	case m.Region != wc.regions:
		ch.end(wire.CodeOutOfOrder, fmt.Sprintf("REGION_FINISH of region %d, the open one is %d", m.Region, wc.regions))
		return
	case m.Buffers != wc.regBufs || m.StoredBytes != wc.regBytes:
		ch.end(wire.CodeInvalidArgument, fmt.Sprintf("REGION_FINISH counts %d buffers of %d bytes, the server received %d of %d",
			m.Buffers, m.StoredBytes, wc.regBufs, wc.regBytes))
		return
	}
	if err := wc.w.FinishRegion(); err != nil {
		ch.fail(err, opWrite)
		return
	}
	wc.inRegion = false
	wc.regions++
	wc.totals.Regions = wc.regions
	wc.grant()
}

func (wc *writeChan) finish(m *wire.WriteFinish) {
	ch, c := wc.ch, wc.ch.c
	switch {
	case wc.w == nil || wc.inRegion:
		ch.end(wire.CodeOutOfOrder, "WRITE_FINISH inside a region")
		return
	case m.WriteTotals != wc.totals:
		ch.end(wire.CodeInvalidArgument, fmt.Sprintf("WRITE_FINISH totals %+v, the server received %+v", m.WriteTotals, wc.totals))
		return
	}
	c.mem.release(int64(wc.releaseCredit()))
	res, err := wc.w.Finish(ch.ctx)
	if err != nil {
		ch.fail(err, opWrite)
		return
	}
	c.s.st.commits.Add(1)
	wc.w = nil // committed: nothing to abort
	ch.terminal(&wire.WriteCommitted{WriteTotals: wc.totals, FileLength: uint64(res.Length), FooterCRC: res.FooterCRC})
}

// abort discards an uncommitted partition.
func (wc *writeChan) abort() {
	if wc.w == nil {
		return
	}
	if err := wc.w.Abort(); err != nil {
		wc.ch.c.log.Warn("server: aborting a partition", "partition", wc.w.Ref(), "err", err)
	}
	wc.w = nil
}
