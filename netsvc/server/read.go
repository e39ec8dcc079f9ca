package server

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// readChan is a read channel. After open it belongs to the connection's
// writer goroutine: pump polls the scheduler reader's chunks, checks the
// stored headers in them (and, for a ReducePartition, drops what the
// attempt table does not admit), and cuts READ_DATA frames of whole items
// within the client's credit; afterWrite releases the chunks whose bytes
// have been written. Other goroutines only add credit and request an end,
// through atomics, and mark the channel ready.
//
// The stream: the bytes the channel sends, in order. sentPos is what went
// into frames, writtenPos what the socket took, queuedEnd what is parsed
// and ready to go (whole items end at the positions in bounds; the last
// item may be partial: a chunk may end anywhere).
type readChan struct {
	ch  *channel
	o   *outbox
	req *openReq

	// Set by open, read-only afterwards.
	part     *mapPart
	rr       *engine.ReduceReader
	sr       *scheduler.Reader
	exts     []scheduler.Extent
	filter   *layout.ReduceFilter
	segment  bool
	subStart uint32
	subEnd   uint32
	total    uint64 // stored bytes the channel delivers
	count    uint32 // READ_OPENED's count
	name     string // the partition, for messages
	openErr  error
	opened   atomic.Bool

	creditIn   atomic.Uint64
	inReady    atomic.Bool
	memWaiting atomic.Bool
	closeReq   atomic.Bool
	endMu      sync.Mutex
	endCode    wire.Code
	endMsg     string

	// The writer's own.
	done       bool // cleaned up
	announced  bool
	terminal   bool // the terminal frame is in a round
	touched    bool // in the round being written
	credit     uint64
	stalled    bool // an empty READ_DATA announced the next item; not again until credit
	granted    uint64
	received   uint64
	dropped    uint64
	memHeld    int64
	eof        bool
	hdr        [wire.SegmentHeaderSize]byte
	hdrHave    int
	hdrParts   [][]byte
	hdrOff     int64
	itemLeft   int64
	serve      bool
	curSize    uint64 // size of the served item being parsed (0: none or header incomplete)
	pieces     [][]byte
	pieceHead  int
	bounds     []uint64
	boundHead  int
	queuedEnd  uint64
	sentPos    uint64
	writtenPos uint64
	itemsSent  uint64
	chunks     []heldChunk
	chunkHead  int
}

type heldChunk struct {
	c   scheduler.Chunk
	end uint64 // stream position after its last byte; unknownEnd while a split header may still use it
}

const unknownEnd = math.MaxUint64

func newReadChan(ch *channel, req *openReq) *readChan {
	rc := &readChan{ch: ch, o: &ch.c.out, req: req}
	rc.credit = uint64(req.read.Credit)
	return rc
}

// addCredit applies a client grant (read loop).
func (rc *readChan) addCredit(n uint64) {
	rc.creditIn.Add(n)
	rc.o.markReady(rc)
}

// requestEnd asks the writer to end the channel with an ERROR.
func (rc *readChan) requestEnd(code wire.Code, msg string) {
	rc.endMu.Lock()
	if rc.endCode == 0 {
		rc.endCode, rc.endMsg = code, msg
	}
	rc.endMu.Unlock()
	rc.o.markReady(rc)
}

// requestClose asks the writer to end the channel with CHANNEL_CLOSED.
func (rc *readChan) requestClose() {
	rc.ch.c.remove(rc.ch)
	rc.closeReq.Store(true)
	rc.o.markReady(rc)
}

// open locates the partition and registers the scheduler reader (on its
// own goroutine: it reads the partition's metadata from disk), then hands
// the channel to the writer.
func (rc *readChan) open() {
	rc.openErr = rc.prepare()
	o := rc.o
	o.mu.Lock()
	if o.stopped || o.stopping {
		o.mu.Unlock()
		rc.cleanup()
		return
	}
	o.reads[rc] = struct{}{}
	o.mu.Unlock()
	rc.opened.Store(true)
	o.markReady(rc)
}

func (rc *readChan) prepare() error {
	c := rc.ch.c
	s := c.s
	m := &rc.req.read
	job, ds := rc.req.job, rc.req.ds
	var exts []engine.Extent
	var disk *engine.Disk
	switch m.Kind {
	case wire.PartitionMap:
		rc.name = fmt.Sprintf("MapPartition %s/%s map %d attempt %d", job, ds, m.Index, m.Attempt)
		p, err := s.parts.openMap(job, ds, m.Index, m.Attempt)
		if err != nil {
			return err
		}
		rc.part = p
		rc.count = p.r.Partition().Header.SubpartitionCount
		if m.SubEnd > rc.count {
			return &wire.Error{Code: wire.CodeInvalidArgument,
				Msg: fmt.Sprintf("subpartitions [%d, %d) of a partition of %d", m.SubStart, m.SubEnd, rc.count)}
		}
		rc.subStart, rc.subEnd = m.SubStart, m.SubEnd
		if exts, err = p.extents(m.SubStart, m.SubEnd, nil); err != nil {
			return err
		}
		disk = p.r.Disk()
	default:
		rc.name = fmt.Sprintf("ReducePartition %s/%s reduce %d", job, ds, m.Index)
		rc.segment = true
		rr, err := s.store.OpenReduceReader(job, ds, m.Index)
		if err != nil {
			return err
		}
		rc.rr = rr
		if rc.filter, err = rr.Filter(); err != nil {
			return err
		}
		rc.count = rr.Partition().Header.MapCount
		for _, cm := range rr.Committed() {
			rc.total += uint64(cm.Segments)*wire.SegmentHeaderSize + cm.Bytes
		}
		exts = append(exts, rr.Segments())
		disk = rr.Disk()
	}
	sc := s.cfg.Scheduler(disk)
	if sc == nil {
		return fmt.Errorf("server: no read scheduler for disk %s", disk.Path())
	}
	rc.exts = make([]scheduler.Extent, 0, len(exts))
	var sum uint64
	for _, e := range exts {
		rc.exts = append(rc.exts, scheduler.Extent{File: e.File, Offset: e.Offset, Length: e.Length})
		sum += uint64(e.Length)
	}
	if !rc.segment {
		rc.total = sum
	}
	sr, err := sc.Register(scheduler.ReaderConfig{Job: job, Extents: rc.exts, Notify: func() { rc.o.markReady(rc) }})
	if err != nil {
		return err
	}
	rc.sr = sr
	return nil
}

// pump does the channel's work for one round of the writer; true means it
// may have more to send right away.
func (rc *readChan) pump(o *outbox) bool {
	if rc.done || rc.terminal || !rc.opened.Load() {
		return false
	}
	if rc.closeReq.Load() {
		rc.end(o, &wire.ChannelClosed{})
		return false
	}
	rc.endMu.Lock()
	code, msg := rc.endCode, rc.endMsg
	rc.endMu.Unlock()
	if code != 0 {
		rc.fail(o, code, msg)
		return false
	}
	if rc.openErr != nil {
		var we *wire.Error
		if errors.As(rc.openErr, &we) {
			rc.fail(o, we.Code, we.Msg)
		} else {
			rc.fail(o, codeOf(rc.openErr, opRead), errMessage(rc.openErr))
		}
		return false
	}
	if !rc.announced {
		rc.announced = true
		m := wire.ReadOpened{TotalBytes: rc.total, Count: rc.count}
		start := len(o.arena)
		o.arena = m.AppendFrame(o.arena, o.c.major, rc.ch.id)
		o.frame(start)
		rc.touch(o)
	}
	if n := rc.creditIn.Swap(0); n > 0 {
		rc.credit += n
		rc.stalled = false
	}
	for !rc.eof {
		c, err := rc.sr.Poll()
		if err == scheduler.ErrPending {
			break
		}
		if err == io.EOF {
			rc.eof = true
			if rc.granted > rc.received {
				// Credit the reader no longer needs: give its memory back.
				rc.granted = rc.received
			}
			break
		}
		if err != nil {
			rc.fail(o, codeOf(err, opRead), fmt.Sprintf("%s: %v; recompute the partition", rc.name, err))
			return false
		}
		rc.received += uint64(len(c.Data))
		if err := rc.parse(c); err != nil {
			rc.fail(o, wire.CodeDataLost, fmt.Sprintf("%s is corrupt on the worker's disk: %v; recompute the partition", rc.name, err))
			return false
		}
	}
	frames := rc.cut(o)
	if rc.terminal {
		return false
	}
	if rc.eof && rc.itemLeft == 0 && rc.hdrHave == 0 && rc.sentPos == rc.queuedEnd {
		if !o.room() {
			// The round is full: the READ_END goes in the next one. Nothing
			// else would wake this channel again (its reader is done).
			return true
		}
		if rc.filter != nil {
			if err := rc.filter.Check(); err != nil {
				rc.fail(o, wire.CodeDataLost, fmt.Sprintf("%s: %v; recompute the partition", rc.name, err))
				return false
			}
		}
		rc.end(o, &wire.ReadEnd{Items: rc.itemsSent, StoredBytes: rc.sentPos})
		rc.ch.c.s.st.readsComplete.Add(1)
		return false
	}
	rc.topUp()
	rc.releaseChunks()
	rc.syncMem()
	return frames == maxFramesPerPump
}

func (rc *readChan) hdrSize() int {
	if rc.segment {
		return wire.SegmentHeaderSize
	}
	return wire.BufferHeaderSize
}

// parse walks a chunk's bytes: item headers are checked, served bytes
// become pieces of the stream, dropped ones are counted.
func (rc *readChan) parse(c scheduler.Chunk) error {
	if c.Offset == 0 && (rc.itemLeft > 0 || rc.hdrHave > 0) {
		return &layout.CorruptError{File: rc.fileKind(), Offset: rc.hdrOff, Truncated: true, What: "an extent ends inside an item"}
	}
	rc.chunks = append(rc.chunks, heldChunk{c: c, end: unknownEnd})
	data := c.Data
	base := rc.exts[c.Extent].Offset + c.Offset
	hs := rc.hdrSize()
	for pos := 0; pos < len(data); {
		if rc.itemLeft > 0 {
			k := int(min(rc.itemLeft, int64(len(data)-pos)))
			rc.take(data[pos : pos+k])
			pos += k
			rc.itemLeft -= int64(k)
			if rc.itemLeft == 0 {
				rc.endItem()
			}
			continue
		}
		if rc.hdrHave == 0 && len(data)-pos >= hs {
			raw := data[pos : pos+hs]
			if err := rc.item(raw, base+int64(pos)); err != nil {
				return err
			}
			rc.take(raw)
			pos += hs
			if rc.itemLeft == 0 {
				rc.endItem()
			}
			continue
		}
		// A header split between chunks: assemble a copy to decode, keep
		// the pieces to send.
		if rc.hdrHave == 0 {
			rc.hdrOff = base + int64(pos)
		}
		k := copy(rc.hdr[rc.hdrHave:hs], data[pos:])
		rc.hdrParts = append(rc.hdrParts, data[pos:pos+k])
		rc.hdrHave += k
		pos += k
		if rc.hdrHave < hs {
			break
		}
		rc.hdrHave = 0
		if err := rc.item(rc.hdr[:hs], rc.hdrOff); err != nil {
			return err
		}
		for _, p := range rc.hdrParts {
			rc.take(p)
		}
		clear(rc.hdrParts)
		rc.hdrParts = rc.hdrParts[:0]
		if rc.itemLeft == 0 {
			rc.endItem()
		}
	}
	if c.Last && (rc.itemLeft > 0 || rc.hdrHave > 0) {
		return &layout.CorruptError{File: rc.fileKind(), Offset: rc.hdrOff, Truncated: true, What: "an extent ends inside an item"}
	}
	if rc.hdrHave == 0 {
		// Every byte of the held chunks is accounted for.
		for i := len(rc.chunks) - 1; i >= rc.chunkHead && rc.chunks[i].end == unknownEnd; i-- {
			rc.chunks[i].end = rc.queuedEnd
		}
	}
	return nil
}

func (rc *readChan) fileKind() layout.FileKind {
	if rc.segment {
		return layout.KindReducePartition
	}
	return layout.KindMapPartition
}

// item checks an item header at file offset off and starts the item.
func (rc *readChan) item(raw []byte, off int64) error {
	if rc.segment {
		h, err := wire.DecodeSegmentHeader(raw)
		if err != nil {
			return rebase(err, off)
		}
		serve, err := rc.filter.Admit(&h, off)
		if err != nil {
			return err
		}
		rc.itemLeft, rc.serve = int64(h.PayloadLength), serve
		if serve {
			rc.curSize = uint64(wire.SegmentHeaderSize) + uint64(h.PayloadLength)
		}
		return nil
	}
	h, err := wire.DecodeBufferHeader(raw)
	if err != nil {
		return rebase(err, off)
	}
	if h.Subpartition != wire.AllSubpartitions && (h.Subpartition < rc.subStart || h.Subpartition >= rc.subEnd) {
		return &layout.CorruptError{File: layout.KindMapPartition, Offset: off, Length: wire.BufferHeaderSize,
			What: fmt.Sprintf("buffer of subpartition %d in an extent read for [%d, %d)", h.Subpartition, rc.subStart, rc.subEnd)}
	}
	rc.itemLeft, rc.serve = int64(h.PayloadLength), true
	rc.curSize = uint64(wire.BufferHeaderSize) + uint64(h.PayloadLength)
	return nil
}

// rebase moves an item-relative error offset to the file offset.
func rebase(err error, off int64) error {
	var ce *layout.CorruptError
	if errors.As(err, &ce) {
		e := *ce
		e.Offset += off
		return &e
	}
	return err
}

// take adds bytes of the current item to the stream, or counts them
// dropped.
func (rc *readChan) take(b []byte) {
	if !rc.serve {
		rc.dropped += uint64(len(b))
		return
	}
	rc.pieces = append(rc.pieces, b)
	rc.queuedEnd += uint64(len(b))
}

func (rc *readChan) endItem() {
	if rc.serve {
		rc.bounds = append(rc.bounds, rc.queuedEnd)
	}
	rc.serve, rc.curSize = false, 0
}

// headSize is the size of the first unsent item, 0 if not known yet.
func (rc *readChan) headSize() uint64 {
	if rc.boundHead < len(rc.bounds) {
		return rc.bounds[rc.boundHead] - rc.sentPos
	}
	return rc.curSize
}

// cut adds READ_DATA frames of whole items within the client's credit to
// the round; it returns how many.
func (rc *readChan) cut(o *outbox) int {
	c := rc.ch.c
	maxBody := uint64(c.peerMax) - wire.ReadDataFieldsSize
	target := min(uint64(c.s.cfg.ReadFrameBytes), maxBody)
	frames := 0
	for frames < maxFramesPerPump && rc.boundHead < len(rc.bounds) && o.room() {
		limit := min(rc.credit, target)
		i, end := rc.boundHead, rc.sentPos
		for i < len(rc.bounds) && rc.bounds[i]-rc.sentPos <= limit {
			end = rc.bounds[i]
			i++
		}
		if end == rc.sentPos {
			size := rc.bounds[i] - rc.sentPos
			switch {
			case size > maxBody:
				rc.fail(o, wire.CodeInvalidArgument, fmt.Sprintf("%s holds an item of %d bytes, above the client's frame limit %d", rc.name, size, c.peerMax))
				return frames
			case size > rc.credit:
				rc.announce(o, size)
				return frames
			}
			end, i = rc.bounds[i], i+1 // one item above the target size
		}
		rc.emit(o, end, i)
		frames++
	}
	if rc.boundHead == len(rc.bounds) && rc.curSize > rc.credit && o.room() {
		rc.announce(o, rc.curSize)
	}
	return frames
}

// announce sends a READ_DATA without stored bytes saying the next item's
// size, once per stall.
func (rc *readChan) announce(o *outbox, next uint64) {
	if rc.stalled {
		return
	}
	rc.stalled = true
	start := len(o.arena)
	o.arena = wire.AppendReadDataHeader(o.arena, o.c.major, rc.ch.id, rc.backlog(rc.sentPos), uint32(next), 0)
	o.frame(start)
	rc.touch(o)
}

func (rc *readChan) backlog(pos uint64) uint64 {
	if rc.total > pos {
		return rc.total - pos
	}
	return 0
}

// emit adds a READ_DATA of the stream's bytes [sentPos, end), which ends
// the item bounds[i-1].
func (rc *readChan) emit(o *outbox, end uint64, i int) {
	n := end - rc.sentPos
	var next uint64
	if i < len(rc.bounds) {
		next = rc.bounds[i] - end
	} else {
		next = rc.curSize
	}
	start := len(o.arena)
	o.arena = wire.AppendReadDataHeader(o.arena, o.c.major, rc.ch.id, rc.backlog(end), uint32(next), int(n))
	o.frame(start)
	for left := n; left > 0; {
		p := rc.pieces[rc.pieceHead]
		if uint64(len(p)) <= left {
			o.iov = append(o.iov, p)
			rc.pieces[rc.pieceHead] = nil
			rc.pieceHead++
			left -= uint64(len(p))
			continue
		}
		o.iov = append(o.iov, p[:left])
		rc.pieces[rc.pieceHead] = p[left:]
		left = 0
	}
	rc.itemsSent += uint64(i - rc.boundHead)
	rc.boundHead = i
	rc.sentPos = end
	rc.credit -= n
	st := &rc.ch.c.s.st
	st.bytesSent.Add(int64(n))
	st.framesSent.Add(1)
	rc.compact()
	rc.touch(o)
}

// compact reuses the queues' space once their heads have moved on.
func (rc *readChan) compact() {
	if rc.pieceHead == len(rc.pieces) {
		rc.pieces, rc.pieceHead = rc.pieces[:0], 0
	} else if rc.pieceHead > 64 && rc.pieceHead > len(rc.pieces)/2 {
		k := copy(rc.pieces, rc.pieces[rc.pieceHead:])
		clear(rc.pieces[k:])
		rc.pieces, rc.pieceHead = rc.pieces[:k], 0
	}
	if rc.boundHead == len(rc.bounds) {
		rc.bounds, rc.boundHead = rc.bounds[:0], 0
	} else if rc.boundHead > 64 && rc.boundHead > len(rc.bounds)/2 {
		k := copy(rc.bounds, rc.bounds[rc.boundHead:])
		rc.bounds, rc.boundHead = rc.bounds[:k], 0
	}
}

func (rc *readChan) touch(o *outbox) {
	if !rc.touched {
		rc.touched = true
		o.touched = append(o.touched, rc)
	}
}

// topUp asks the scheduler for what the client's credit can take, plus
// the rest of an item the credit does not cover (the client grants at least
// that when told), minus what is already asked for or held.
func (rc *readChan) topUp() {
	if rc.eof || rc.terminal {
		return
	}
	need := max(rc.credit, rc.headSize())
	pending := rc.queuedEnd - rc.sentPos + uint64(rc.hdrHave)
	if rc.hdrHave > 0 {
		need = max(need, pending+uint64(rc.hdrSize()-rc.hdrHave))
	}
	outstanding := rc.granted - rc.received
	have := outstanding + pending
	if need <= have {
		return
	}
	d := need - have
	if d < minReadGrant && outstanding > 0 {
		return // a small grant while a read is pending: wait and grant more at once
	}
	// At least what the next item needs (or a minimum grant), not all of
	// d: a client may grant more credit than the connection's memory holds.
	got := rc.ch.c.mem.take(int64(d), int64(min(d, max(minReadGrant, rc.headSize()))))
	if got == 0 {
		rc.ch.c.mem.waitRead(rc)
		return
	}
	rc.memHeld += got
	rc.granted += uint64(got)
	rc.sr.AddCredit(got)
}

// releaseChunks releases the chunks whose bytes have all been written.
func (rc *readChan) releaseChunks() {
	for rc.chunkHead < len(rc.chunks) {
		hc := &rc.chunks[rc.chunkHead]
		if hc.end == unknownEnd || hc.end > rc.writtenPos {
			break
		}
		hc.c.Release()
		*hc = heldChunk{}
		rc.chunkHead++
	}
	if rc.chunkHead == len(rc.chunks) {
		rc.chunks, rc.chunkHead = rc.chunks[:0], 0
	} else if rc.chunkHead > 16 && rc.chunkHead > len(rc.chunks)/2 {
		k := copy(rc.chunks, rc.chunks[rc.chunkHead:])
		clear(rc.chunks[k:])
		rc.chunks, rc.chunkHead = rc.chunks[:k], 0
	}
}

// syncMem gives back the connection memory of what was written or
// dropped.
func (rc *readChan) syncMem() {
	held := int64(rc.granted - rc.dropped - rc.writtenPos)
	if held < rc.memHeld {
		rc.ch.c.mem.release(rc.memHeld - held)
		rc.memHeld = held
	}
}

// afterWrite runs once the round holding the channel's frames is written.
func (rc *readChan) afterWrite() {
	rc.touched = false
	rc.writtenPos = rc.sentPos
	if rc.terminal {
		rc.cleanup()
		return
	}
	rc.releaseChunks()
	rc.syncMem()
	if rc.stalled || rc.boundHead < len(rc.bounds) {
		rc.o.markReady(rc) // the memory given back may let it ask for more
	}
}

// fail ends the channel with an ERROR.
func (rc *readChan) fail(o *outbox, code wire.Code, msg string) {
	m := wire.NewErrorMsg(&wire.Error{Code: code, Channel: rc.ch.id, Msg: msg}, wire.MinSupported, wire.Current)
	rc.ch.c.s.st.errors.Add(1)
	rc.end(o, &m)
}

// end adds the channel's terminal frame to the round; it is cleaned up
// once the round is written.
func (rc *readChan) end(o *outbox, m wire.Message) {
	rc.ch.c.remove(rc.ch)
	if _, closed := m.(*wire.ChannelClosed); !closed && rc.closeReq.Load() {
		m = &wire.ChannelClosed{} // a CLOSE_CHANNEL is always answered
	}
	start := len(o.arena)
	o.arena = wire.AppendFrame(o.arena, o.c.major, rc.ch.id, m)
	o.frame(start)
	rc.terminal = true
	rc.touch(o)
}

// cleanup drops everything the channel holds: the scheduler reader is
// cancelled, its chunks released, the partition closed (writer goroutine,
// or teardown after the writer ended).
func (rc *readChan) cleanup() {
	if rc.done {
		return
	}
	rc.done = true
	if rc.sr != nil {
		rc.sr.Cancel()
	}
	for i := rc.chunkHead; i < len(rc.chunks); i++ {
		rc.chunks[i].c.Release()
	}
	clear(rc.chunks)
	clear(rc.pieces)
	clear(rc.hdrParts)
	rc.chunks, rc.pieces, rc.hdrParts = nil, nil, nil
	c := rc.ch.c
	if rc.part != nil {
		c.s.parts.release(rc.part)
		rc.part = nil
	}
	if rc.rr != nil {
		if err := rc.rr.Close(); err != nil {
			c.log.Warn("server: closing a partition", "partition", rc.name, "err", err)
		}
		rc.rr = nil
	}
	c.mem.release(rc.memHeld)
	rc.memHeld = 0
	c.remove(rc.ch)
	rc.o.mu.Lock()
	delete(rc.o.reads, rc)
	rc.o.mu.Unlock()
}

// DebugReads describes every read channel's state (temporary debugging aid).
func (s *Server) DebugReads() string {
	var b []byte
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.out.mu.Lock()
		for rc := range c.out.reads {
			b = fmt.Appendf(b, "ch %d: opened %v done %v term %v credit %d creditIn %d stalled %v granted %d received %d dropped %d eof %v hdrHave %d itemLeft %d cur %d pieces %d/%d bounds %d/%d queued %d sent %d written %d chunks %d/%d memHeld %d inReady %v memWait %v\n",
				rc.ch.id, rc.opened.Load(), rc.done, rc.terminal, rc.credit, rc.creditIn.Load(), rc.stalled, rc.granted, rc.received, rc.dropped, rc.eof,
				rc.hdrHave, rc.itemLeft, rc.curSize, rc.pieceHead, len(rc.pieces), rc.boundHead, len(rc.bounds), rc.queuedEnd, rc.sentPos, rc.writtenPos,
				rc.chunkHead, len(rc.chunks), rc.memHeld, rc.inReady.Load(), rc.memWaiting.Load())
		}
		c.out.mu.Unlock()
		b = fmt.Appendf(b, "conn mem used %d\n", c.mem.used)
	}
	return string(b)
}
