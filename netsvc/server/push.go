package server

import (
	"context"
	"fmt"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// pushChan is a ReducePartition push channel (PROTOCOL.md, "Push
// channel"). Its credit comes from the connection's memory, not from the
// partition's merge buffer, which every producer of the dataset shares: a
// window of two segments, topped up as segments arrive.
type pushChan struct {
	ch *channel

	rp          *engine.ReducePartition
	job, ds     string
	reduce      uint32
	mapIdx, att uint32
	maps        uint32
	maxSeg      int
	held        uint32 // seqs 0..held-1 of the attempt are in the partition
	bytes       uint64 // their payload bytes
}

func (pc *pushChan) window() uint64 { return 2 * uint64(pc.maxSeg) }

func (pc *pushChan) run(o *op) {
	ch := pc.ch
	switch o.kind {
	case opOpen:
		pc.open(o.open)
	case opData:
		pc.stagedData(o)
	case opPushCommit:
		pc.commit(&o.pushCommit)
	case opPushAbort:
		pc.abortAttempt()
	case opGrant:
		ch.mu.Lock()
		ch.waitingMem = false
		ch.mu.Unlock()
		pc.ackAndGrant(false)
	case opClose, opDrop:
		// The segments held stay for a later channel of the attempt.
		ch.c.mem.release(int64(pc.releaseCredit()))
		if o.kind == opClose {
			ch.c.out.sendChannelClosed(ch.id)
		}
	}
}

func (pc *pushChan) open(req *openReq) {
	ch, c := pc.ch, pc.ch.c
	m := &req.push
	pc.job, pc.ds = req.job, req.ds
	pc.reduce, pc.mapIdx, pc.att, pc.maps, pc.maxSeg = m.Reduce, m.Map, m.Attempt, m.Maps, int(m.MaxSegmentBytes)
	if ch.refuseItem("max segment bytes", pc.maxSeg) {
		return
	}
	if rp, err := c.s.store.Reduce(req.job, req.ds, m.Reduce); err == nil && !rp.Finalized() && rp.MapCount() != m.Maps {
		ch.end(wire.CodeInvalidArgument, fmt.Sprintf("PUSH_OPEN with %d maps; the ReducePartition has %d", m.Maps, rp.MapCount()))
		return
	}
	rp, err := c.s.store.OpenReduce(ch.ctx, engine.ReduceSpec{Job: req.job, Dataset: req.ds, Reduce: m.Reduce, MapCount: m.Maps, Codec: m.Codec})
	if err != nil {
		ch.fail(err, opWrite)
		return
	}
	if rp.Finalized() {
		ch.end(wire.CodeSuperseded, fmt.Sprintf("%v is finalized", rp.Ref()))
		return
	}
	pc.rp = rp
	pc.held, pc.bytes = rp.Held(m.Map, m.Attempt)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ended {
		return
	}
	first := uint64(c.mem.take(int64(pc.window()), int64(pc.maxSeg)))
	ch.granted += first
	c.out.sendMsg(ch.id, &wire.PushOpened{Credit: uint32(first), Held: pc.held})
	if first == 0 && !ch.waitingMem {
		ch.waitingMem = true
		c.mem.wait(ch)
	}
}

// ackAndGrant acknowledges the segments held and tops the credit up to the
// window (owner only).
func (pc *pushChan) ackAndGrant(ack bool) {
	ch := pc.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ended {
		return
	}
	if ack {
		ch.c.out.ack(ch, pc.held)
	}
	out := ch.outstandingLocked()
	if out >= uint64(pc.maxSeg) || ch.waitingMem {
		return
	}
	n := uint64(ch.c.mem.take(int64(pc.window()-out), int64(pc.maxSeg)-int64(out)))
	if n == 0 {
		ch.waitingMem = true
		ch.c.mem.wait(ch)
		return
	}
	ch.grantLocked(n)
}

func (pc *pushChan) releaseCredit() uint64 {
	ch := pc.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	out := ch.outstandingLocked()
	ch.consumed = ch.granted
	return out
}

// pushData handles PUSH_DATA in the read loop.
func (c *conn) pushData(h *wire.Header) error {
	ch := c.lookup(h.Channel)
	if ch == nil || ch.p == nil {
		if ch != nil {
			ch.end(wire.CodeOutOfOrder, "PUSH_DATA on a "+ch.kind.String()+" channel")
		}
		return nil
	}
	n := int(h.Length)
	ch.mu.Lock()
	if ch.ended {
		ch.mu.Unlock()
		return nil
	}
	if !ch.creditCheckLocked(n) {
		c.s.st.creditViolations.Add(1)
		ch.endLocked(wire.CodeCreditExceeded, fmt.Sprintf("PUSH_DATA of %d bytes with %d bytes of credit", n, ch.outstandingLocked()))
		ch.mu.Unlock()
		return nil
	}
	if !ch.claimLocked() {
		ch.mu.Unlock()
		return c.queueData(ch, h, nil)
	}
	ch.mu.Unlock()
	err := ch.p.inlineData(h)
	ch.release()
	return err
}

// checkSegment checks a segment header against the channel; dup reports a
// seq the partition holds already.
func (pc *pushChan) checkSegment(raw []byte, n int) (sh wire.SegmentHeader, dup bool, err error) {
	if pc.rp == nil {
		return sh, false, &wire.Error{Code: wire.CodeOutOfOrder, Msg: "PUSH_DATA before the channel is open"}
	}
	if n > pc.maxSeg {
		return sh, false, &wire.Error{Code: wire.CodeInvalidArgument, Msg: fmt.Sprintf("a segment of %d bytes, above PUSH_OPEN's max segment bytes %d", n, pc.maxSeg)}
	}
	sh, err = wire.DecodeSegmentHeader(raw)
	switch {
	case err != nil:
		return sh, false, &wire.Error{Code: wire.CodeCorruptData, Msg: "PUSH_DATA: " + err.Error()}
	case wire.SegmentHeaderSize+int(sh.PayloadLength) != n:
		return sh, false, &wire.Error{Code: wire.CodeCorruptData, Msg: fmt.Sprintf("PUSH_DATA body of %d bytes holds a segment of %d", n, wire.SegmentHeaderSize+int(sh.PayloadLength))}
	case sh.Map != pc.mapIdx || sh.Attempt != pc.att:
		return sh, false, &wire.Error{Code: wire.CodeInvalidArgument, Msg: fmt.Sprintf("segment of map %d attempt %d on a channel of map %d attempt %d", sh.Map, sh.Attempt, pc.mapIdx, pc.att)}
	case sh.Seq > pc.held:
		return sh, false, &wire.Error{Code: wire.CodeOutOfOrder, Msg: fmt.Sprintf("segment seq %d, the next is %d", sh.Seq, pc.held)}
	}
	return sh, sh.Seq < pc.held, nil
}

// inlineData is the zero-copy push path; the read loop owns the channel.
func (pc *pushChan) inlineData(h *wire.Header) error {
	ch, c := pc.ch, pc.ch.c
	n := int(h.Length)
	hdr := c.segHdr[:]
	if err := c.fr.ReadFull(hdr); err != nil {
		return err
	}
	sh, dup, err := pc.checkSegment(hdr, n)
	if err != nil {
		ch.fail(err, opWrite)
		c.mem.release(int64(n))
		return nil
	}
	if dup {
		return pc.dropDuplicate(&sh, n)
	}
	var payload [][]byte
	stage := n > pc.rp.MaxReserve()
	if !stage {
		payload, dup, err = pc.rp.ReserveSegment(tryCtx, hdr)
		if err != nil && wouldWait(err) {
			// The partition's merge buffer has no room at hand: the worker
			// pushes a staged copy, waiting for memory off the read loop.
			stage, err = true, nil
		}
	}
	switch {
	case err != nil:
		ch.fail(err, opWrite)
		c.mem.release(int64(n))
		return nil
	case dup:
		return pc.dropDuplicate(&sh, n)
	case stage:
		o, err := c.stageBody(h, hdr)
		if err != nil {
			return err
		}
		ch.mu.Lock()
		ch.ops = append(ch.ops, o)
		ch.mu.Unlock()
		return nil
	}
	for _, p := range payload {
		if err := c.fr.ReadFull(p); err != nil {
			pc.rp.CancelSegment()
			return err
		}
	}
	if err := pc.rp.CommitSegment(); err != nil {
		ch.fail(err, opWrite)
		c.mem.release(int64(n))
		return nil
	}
	pc.held++
	pc.bytes += uint64(sh.PayloadLength)
	c.mem.release(int64(n))
	c.s.st.bytesReceived.Add(int64(n))
	c.s.st.zeroCopyBytes.Add(int64(n))
	pc.ackAndGrant(true)
	return nil
}

// dropDuplicate reads a retried segment's payload, checks it against its
// CRC, and acknowledges it without storing it.
func (pc *pushChan) dropDuplicate(sh *wire.SegmentHeader, n int) error {
	ch, c := pc.ch, pc.ch.c
	left := int(sh.PayloadLength)
	var crc uint32
	for left > 0 {
		k := min(left, len(c.body))
		if err := c.fr.ReadFull(c.body[:k]); err != nil {
			return err
		}
		crc = wire.UpdateChecksum(crc, c.body[:k])
		left -= k
	}
	c.mem.release(int64(n))
	if crc != sh.PayloadCRC {
		ch.end(wire.CodeCorruptData, fmt.Sprintf("retried segment seq %d: payload CRC %#x, header says %#x", sh.Seq, crc, sh.PayloadCRC))
		return nil
	}
	pc.ackAndGrant(true)
	return nil
}

// stagedData pushes a staged segment by copying it (the worker; may wait).
func (pc *pushChan) stagedData(o *op) {
	ch, c := pc.ch, pc.ch.c
	defer func() {
		c.stage.release(o.stage, o.n)
		c.mem.release(int64(o.n))
	}()
	sh, dup, err := pc.checkSegment(o.buf, o.n)
	if err == nil && !dup {
		if err = sh.CheckPayload(o.buf[wire.SegmentHeaderSize:]); err != nil {
			err = &wire.Error{Code: wire.CodeCorruptData, Msg: "PUSH_DATA: " + err.Error()}
		}
	}
	if err != nil {
		ch.fail(err, opWrite)
		return
	}
	if !dup {
		if dup, err = pc.rp.Push(ch.ctx, o.buf); err != nil {
			if ch.ctx.Err() == nil {
				ch.fail(err, opWrite)
			}
			return
		}
		if !dup {
			pc.held++
			pc.bytes += uint64(sh.PayloadLength)
			c.s.st.bytesReceived.Add(int64(o.n))
		}
	}
	pc.ackAndGrant(true)
}

func (pc *pushChan) commit(m *wire.PushCommit) {
	ch, c := pc.ch, pc.ch.c
	if pc.rp == nil {
		ch.end(wire.CodeOutOfOrder, "PUSH_COMMIT before the channel is open")
		return
	}
	if m.Segments != pc.held || m.PayloadBytes != pc.bytes {
		ch.end(wire.CodeInvalidArgument, fmt.Sprintf("PUSH_COMMIT of %d segments of %d payload bytes; the worker holds %d of %d",
			m.Segments, m.PayloadBytes, pc.held, pc.bytes))
		return
	}
	c.mem.release(int64(pc.releaseCredit()))
	if err := pc.rp.Commit(ch.ctx, pc.mapIdx, pc.att, m.Segments); err != nil {
		ch.fail(err, opWrite)
		return
	}
	c.s.st.pushCommits.Add(1)
	ch.terminal(&wire.PushCommitted{Segments: m.Segments, PayloadBytes: m.PayloadBytes})
	c.s.maybeFinalize(pc.rp)
}

func (pc *pushChan) abortAttempt() {
	ch := pc.ch
	if pc.rp == nil {
		ch.end(wire.CodeOutOfOrder, "PUSH_ABORT before the channel is open")
		return
	}
	if err := pc.rp.Abort(pc.mapIdx, pc.att); err != nil {
		ch.fail(err, opWrite)
		return
	}
	ch.c.mem.release(int64(pc.releaseCredit()))
	ch.terminal(&wire.PushAborted{})
}

// maybeFinalize finalizes a ReducePartition once every producer of its
// dataset has committed in it: nothing more can be pushed to it, and
// readers wait for it (NOT_READY) until then. The control plane has no
// finalize call of its own; a producer given up without a committed attempt
// leaves the partition open (NoAutoFinalize hands the decision to the
// wiring).
func (s *Server) maybeFinalize(rp *engine.ReducePartition) {
	if s.cfg.NoAutoFinalize || uint32(rp.CommittedCount()) < rp.MapCount() {
		return
	}
	if _, busy := s.finalizing.LoadOrStore(rp, struct{}{}); busy {
		return
	}
	go func() {
		defer s.finalizing.Delete(rp)
		if rp.Finalized() {
			return // by the call of another last commit, which ended before this one began
		}
		if _, err := rp.Finalize(context.Background()); err != nil {
			s.log.Warn("server: finalizing a ReducePartition", "partition", rp.Ref(), "err", err)
			return
		}
		s.st.finalized.Add(1)
	}()
}
