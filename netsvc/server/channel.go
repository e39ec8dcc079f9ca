package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// channel is one open channel of a connection.
//
// Ownership. A write or push channel's state (its engine writer, counts,
// state machine) has one owner at a time: the read loop, for a frame it
// handles inline, or the channel's worker goroutine, which runs while the
// channel has queued operations. mu guards the handover (ops, running) and
// the credit counters and end flag, which others touch. A read channel's
// state belongs to the connection's writer goroutine (readChan).
type channel struct {
	c    *conn
	id   uint32
	kind wire.ChannelKind

	ctx    context.Context // ends when the channel ends
	cancel context.CancelFunc

	mu      sync.Mutex
	ops     []op // queued operations: ops[opHead:]; empty (opHead 0) when none
	opHead  int
	running bool // an owner other than the read loop's inline handling holds the state
	ended   bool // the terminal frame is sent or decided: nothing more is sent
	// Write credit (write and push channels): totals granted and consumed.
	granted, consumed uint64
	waitingMem        bool // on the connection's list of channels waiting for memory
	waitingEngine     bool // an opWait is queued or running
	// Guarded by the outbox's mu: the channel's slot in the pending
	// CREDIT_BATCH (index+1; 0: none) and its pending PUSH_ACK.
	creditSlot int
	ackHeld    uint32
	ackQueued  bool

	w *writeChan
	p *pushChan
	r *readChan
}

func (ch *channel) kindIndex() int {
	switch ch.kind {
	case wire.KindWrite:
		return 0
	case wire.KindPush:
		return 1
	}
	return 2
}

// op is one queued operation of a write or push channel.
type op struct {
	kind  opType
	n     int    // body length of a data op
	buf   []byte // staged body
	stage *stageBuf
	// Decoded control messages (the one the kind names).
	open         *openReq
	regionStart  wire.RegionStart
	regionFinish wire.RegionFinish
	writeFinish  wire.WriteFinish
	pushCommit   wire.PushCommit
}

type opType uint8

const (
	opOpen opType = iota + 1
	opData
	opRegionStart
	opRegionFinish
	opWriteFinish
	opPushCommit
	opPushAbort
	opGrant // grant credit (memory became available)
	opWait  // wait for engine memory, then grant
	opClose // CLOSE_CHANNEL: clean up, then CHANNEL_CLOSED
	opDrop  // the channel ended (ERROR sent or the connection died): clean up
)

// openReq is a decoded OPEN, its ids copied out of the read buffer.
type openReq struct {
	write wire.WriteOpen
	push  wire.PushOpen
	read  wire.ReadOpen
	job   string
	ds    string
}

// open handles WRITE_OPEN, PUSH_OPEN and READ_OPEN.
func (c *conn) open(h *wire.Header) error {
	req := &openReq{}
	var m wire.Message
	kind := wire.KindWrite
	switch h.Type {
	case wire.TypeWriteOpen:
		m = &req.write
	case wire.TypePushOpen:
		m, kind = &req.push, wire.KindPush
	default:
		m, kind = &req.read, wire.KindRead
	}
	if err := c.readControl(h, m); err != nil {
		if err == errSkip {
			return nil
		}
		return err
	}
	switch kind {
	case wire.KindWrite:
		req.job, req.ds = string(req.write.Job), string(req.write.Dataset)
	case wire.KindPush:
		req.job, req.ds = string(req.push.Job), string(req.push.Dataset)
	default:
		req.job, req.ds = string(req.read.Job), string(req.read.Dataset)
	}
	c.chMu.Lock()
	if old := c.chans[h.Channel]; old != nil {
		c.chMu.Unlock()
		// Both the old and the new channel end, with one ERROR.
		old.end(wire.CodeChannelInUse, fmt.Sprintf("%v on channel %d, which is open", h.Type, h.Channel))
		return nil
	}
	var refuse wire.Code
	var why string
	switch {
	case c.closing || c.dead:
		refuse, why = wire.CodeShuttingDown, "the connection is closing: open the channel on a new connection"
	case uint32(len(c.chans)) >= c.s.cfg.MaxChannels:
		refuse, why = wire.CodeTooManyChannels, fmt.Sprintf("the connection has %d channels open, the limit", len(c.chans))
	}
	if refuse != 0 {
		c.chMu.Unlock()
		c.sendError(h.Channel, refuse, why)
		return nil
	}
	ch := &channel{c: c, id: h.Channel, kind: kind}
	ch.ctx, ch.cancel = context.WithCancel(c.ctx)
	c.chans[h.Channel] = ch
	c.kinds[ch.kindIndex()]++
	c.chMu.Unlock()
	c.s.st.channelsOpened.Add(1)
	if kind == wire.KindRead {
		ch.r = newReadChan(ch, req)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			ch.r.open()
		}()
		return nil
	}
	if kind == wire.KindWrite {
		ch.w = &writeChan{ch: ch}
	} else {
		ch.p = &pushChan{ch: ch}
	}
	ch.mu.Lock()
	ch.enqueueLocked(op{kind: opOpen, open: req})
	ch.mu.Unlock()
	return nil
}

// keptOps is the largest queue array a drained channel keeps.
const keptOps = 16

// enqueueLocked queues an operation and makes sure a worker runs it.
func (ch *channel) enqueueLocked(o op) {
	ch.ops = append(ch.ops, o)
	if !ch.running {
		ch.running = true
		ch.c.wg.Add(1)
		go ch.work()
	}
}

// claim makes the caller (the read loop) the owner for inline handling if
// no operation is queued; it reports false when the frame must be queued.
// Called with mu held; the caller releases with release.
func (ch *channel) claimLocked() bool {
	if ch.running || len(ch.ops) > 0 {
		return false
	}
	ch.running = true
	return true
}

// release ends inline handling: a worker takes over if operations were
// queued meanwhile.
func (ch *channel) release() {
	ch.mu.Lock()
	if len(ch.ops) > 0 {
		ch.c.wg.Add(1)
		go ch.work()
	} else {
		ch.running = false
	}
	ch.mu.Unlock()
}

// work runs the queued operations in order, then exits.
func (ch *channel) work() {
	defer ch.c.wg.Done()
	for {
		ch.mu.Lock()
		if len(ch.ops) == 0 {
			ch.running = false
			ch.mu.Unlock()
			return
		}
		o := ch.ops[ch.opHead]
		ch.ops[ch.opHead] = op{}
		ch.opHead++
		if ch.opHead == len(ch.ops) {
			// Drained: a short queue keeps its array for the next time (a
			// write channel queues now and then, and must not allocate
			// for it); a long one lets it go, as most channels never queue
			// that much again.
			ch.opHead = 0
			if cap(ch.ops) <= keptOps {
				ch.ops = ch.ops[:0]
			} else {
				ch.ops = nil
			}
		}
		ended := ch.ended
		ch.mu.Unlock()
		ch.run(&o, ended)
	}
}

// run executes one operation as the channel's owner.
func (ch *channel) run(o *op, ended bool) {
	if ended && o.kind != opClose && o.kind != opDrop {
		if o.kind == opData {
			// A body staged in heap memory (larger than a pool buffer) has
			// no stage, but its connection memory is held all the same.
			ch.c.stage.release(o.stage, o.n)
			ch.c.mem.release(int64(o.n))
		}
		return
	}
	if ch.w != nil {
		ch.w.run(o)
	} else {
		ch.p.run(o)
	}
}

// refuseItem ends a write or push channel whose largest item (what, of
// n bytes) could never be granted, being above its connection's memory,
// and reports whether it did.
func (ch *channel) refuseItem(what string, n int) bool {
	if limit := ch.c.mem.limit; int64(n) > limit {
		ch.end(wire.CodeInvalidArgument, fmt.Sprintf("%s %d above the connection's memory, %d bytes", what, n, limit))
		return true
	}
	return false
}

// end ends the channel with an ERROR (its terminal frame), unless it ended
// already; its state is dropped by its owner.
func (ch *channel) end(code wire.Code, msg string) {
	if ch.r != nil {
		ch.r.requestEnd(code, msg)
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.endLocked(code, msg)
}

func (ch *channel) endLocked(code wire.Code, msg string) {
	if ch.ended {
		return
	}
	ch.ended = true
	ch.cancel()
	ch.c.remove(ch)
	ch.c.sendError(ch.id, code, msg)
	ch.enqueueLocked(op{kind: opDrop})
}

// finishLocked ends the channel after its terminal frame (queued by the
// caller right after, under mu).
func (ch *channel) finishLocked() bool {
	if ch.ended {
		return false
	}
	ch.ended = true
	ch.cancel()
	ch.c.remove(ch)
	return true
}

// closeByClient handles CLOSE_CHANNEL: the channel's state is dropped
// (an uncommitted write discarded), then CHANNEL_CLOSED answers.
func (ch *channel) closeByClient() {
	if ch.r != nil {
		ch.r.requestClose()
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ended {
		// Its terminal frame is on its way; the answer follows it.
		ch.c.out.sendChannelClosed(ch.id)
		return
	}
	ch.ended = true
	ch.cancel()
	ch.c.remove(ch)
	ch.enqueueLocked(op{kind: opClose})
}

// drop ends the channel without a frame (the connection is gone).
func (ch *channel) drop() {
	if ch.r != nil {
		ch.r.requestEnd(wire.CodeShuttingDown, "connection closed")
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.ended {
		ch.ended = true
		ch.cancel()
		ch.c.remove(ch)
	}
	ch.enqueueLocked(op{kind: opDrop})
}

// terminal ends the channel with m (WRITE_COMMITTED, PUSH_COMMITTED,
// PUSH_ABORTED) unless it ended already.
func (ch *channel) terminal(m wire.Message) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.finishLocked() {
		return false
	}
	ch.c.out.sendMsg(ch.id, m)
	return true
}

// fail ends the channel with the error's code.
func (ch *channel) fail(err error, kind opKind) {
	var we *wire.Error
	if errors.As(err, &we) {
		ch.end(we.Code, we.Msg)
		return
	}
	ch.end(codeOf(err, kind), errMessage(err))
}

// creditCheck counts a data frame of n bytes against the channel's credit;
// false means the client exceeded it.
func (ch *channel) creditCheckLocked(n int) bool {
	if uint64(n) > ch.granted-ch.consumed {
		return false
	}
	ch.consumed += uint64(n)
	return true
}

// grantLocked sends n bytes of write credit, taken from the connection's
// memory by the caller.
func (ch *channel) grantLocked(n uint64) {
	if ch.ended || n == 0 {
		return
	}
	ch.granted += n
	ch.c.out.grant(ch, n)
}

// outstanding is the credit granted and not yet used.
func (ch *channel) outstandingLocked() uint64 { return ch.granted - ch.consumed }

// stageBody reads the current data frame's remaining body into staging
// memory for a queued data operation. hdr, if not nil, is the part of the
// body read already.
func (c *conn) stageBody(h *wire.Header, hdr []byte) (op, error) {
	n := int(h.Length)
	buf, sb, err := c.stage.alloc(c.ctx, n)
	if err != nil {
		return op{}, err
	}
	k := copy(buf, hdr)
	if err := c.fr.ReadFull(buf[k:]); err != nil {
		c.stage.release(sb, n)
		return op{}, err
	}
	c.s.st.stagedBytes.Add(int64(n))
	return op{kind: opData, n: n, buf: buf, stage: sb}, nil
}

// channelControl handles the control frames of write and push channels
// (REGION_START, REGION_FINISH, WRITE_FINISH, PUSH_COMMIT, PUSH_ABORT) and
// refuses those that make no sense on a channel.
func (c *conn) channelControl(h *wire.Header) error {
	ch := c.lookup(h.Channel)
	if ch == nil {
		return nil // not open: discarded silently (it ended while the frame was in flight)
	}
	// Decoded into the read loop's own op (a local would escape through m
	// and be allocated for every frame), then queued by value.
	o := &c.ctlOp
	*o = op{}
	var m wire.Message
	switch {
	case h.Type == wire.TypeRegionStart && ch.w != nil:
		o.kind, m = opRegionStart, &o.regionStart
	case h.Type == wire.TypeRegionFinish && ch.w != nil:
		o.kind, m = opRegionFinish, &o.regionFinish
	case h.Type == wire.TypeWriteFinish && ch.w != nil:
		o.kind, m = opWriteFinish, &o.writeFinish
	case h.Type == wire.TypePushCommit && ch.p != nil:
		o.kind, m = opPushCommit, &o.pushCommit
	case h.Type == wire.TypePushAbort && ch.p != nil:
		o.kind, m = opPushAbort, &wire.PushAbort{}
	default:
		ch.end(wire.CodeOutOfOrder, fmt.Sprintf("%v on a %v channel", h.Type, ch.kind))
		return nil
	}
	if err := c.readControl(h, m); err != nil {
		if err == errSkip {
			return nil
		}
		return err
	}
	ch.mu.Lock()
	if ch.ended {
		ch.mu.Unlock()
		return nil
	}
	if o.kind == opRegionStart && ch.claimLocked() {
		// Cheap and never waits: handled inline.
		ch.mu.Unlock()
		ch.w.regionStart(&o.regionStart)
		ch.release()
		return nil
	}
	ch.enqueueLocked(*o)
	ch.mu.Unlock()
	return nil
}
