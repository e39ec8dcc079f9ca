package transport

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// base is what every channel kind shares: the id, the write credit, the
// terminal state, and a wake-up for goroutines waiting on it.
type base struct {
	c    *Conn
	chID uint32

	mu        sync.Mutex
	wake      chan struct{}
	remaining uint64 // write credit left (write and push channels)
	err       error  // why the channel ended, if it failed
	done      bool   // terminal frame received (or the connection failed)
	closeSent bool   // CLOSE_CHANNEL sent: only CHANNEL_CLOSED frees the id
	closedAck bool
	closedC   chan struct{} // closed with closedAck (made when CLOSE_CHANNEL is sent)
}

func (b *base) init(c *Conn, id uint32) {
	b.c, b.chID, b.wake = c, id, make(chan struct{}, 1)
}

func (b *base) id() uint32 { return b.chID }

// ID is the channel's id on its connection.
func (b *base) ID() uint32 { return b.chID }

func (b *base) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *base) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.done = true
	b.mu.Unlock()
	b.signal()
}

// terminal records the end of the channel (called with mu held); the id is
// freed unless a CLOSE_CHANNEL is pending.
func (b *base) terminalLocked(ch channel, err error, closedAck bool) {
	if err != nil && b.err == nil {
		b.err = err
	}
	b.done = true
	if closedAck && !b.closedAck {
		b.closedAck = true
		if b.closedC != nil {
			close(b.closedC)
		}
	}
	if !b.closeSent || closedAck {
		b.c.unregister(ch)
	}
}

// wait waits until cond (called with mu held) holds, the channel ends or
// ctx ends.
func (b *base) wait(ctx context.Context, cond func() bool) error {
	for {
		b.mu.Lock()
		if cond() {
			b.mu.Unlock()
			return nil
		}
		if b.done {
			err := b.err
			b.mu.Unlock()
			if err == nil {
				err = errors.New("transport: the channel has ended")
			}
			return err
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *base) addCredit(n uint32) error {
	b.mu.Lock()
	b.remaining += uint64(n)
	b.mu.Unlock()
	b.signal()
	return nil
}

// sendData waits for credit for the stored bytes at frame[HeaderSize:],
// fills in the frame header and writes the frame.
func (b *base) sendData(ctx context.Context, t wire.Type, frame []byte) error {
	n := len(frame) - wire.HeaderSize
	if n <= 0 {
		return errors.New("transport: a data frame without stored bytes")
	}
	if err := b.wait(ctx, func() bool { return b.remaining >= uint64(n) }); err != nil {
		return err
	}
	b.mu.Lock()
	b.remaining -= uint64(n)
	b.mu.Unlock()
	wire.PutDataHeader(frame[:wire.HeaderSize], b.c.major, t, b.chID, n)
	return b.c.writeData(frame)
}

// closeChannel sends CLOSE_CHANNEL and waits for CHANNEL_CLOSED.
func (b *base) closeChannel(ctx context.Context, reason wire.Code, msg string) error {
	b.mu.Lock()
	if b.closeSent || (b.done && b.err != nil) {
		b.mu.Unlock()
		return nil
	}
	if b.done {
		b.mu.Unlock()
		return nil // ended normally: nothing to close
	}
	b.closeSent = true
	b.closedC = make(chan struct{})
	b.mu.Unlock()
	if len(msg) > wire.MaxMessageSize {
		msg = msg[:wire.MaxMessageSize]
	}
	m := wire.CloseChannel{Reason: reason, Message: []byte(msg)}
	id := b.chID
	b.c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, b.c.major, id) })
	return b.waitClosed(ctx)
}

// waitClosed waits for the CHANNEL_CLOSED answering a CLOSE_CHANNEL. A
// terminal message that crossed the CLOSE_CHANNEL ends the channel but not
// the wait: the server answers every CLOSE_CHANNEL, and the id stays in use
// until it does. A lost connection ends both. It waits on a channel of its
// own, not on wake, which a reader or writer waiting at the same time may
// take.
func (b *base) waitClosed(ctx context.Context) error {
	b.mu.Lock()
	closed := b.closedC
	b.mu.Unlock()
	select {
	case <-closed:
		return nil
	case <-b.c.done:
		return nil // the connection is gone: so is the channel
	case <-ctx.Done():
		return ctx.Err()
	}
}

func outOfOrder(id uint32, t wire.Type, kind string) error {
	return &wire.Error{Code: wire.CodeOutOfOrder, Channel: id, Msg: fmt.Sprintf("%v on a %s channel", t, kind)}
}

// ---- MapPartition write ----

// WriteChannel writes one MapPartition (PROTOCOL.md, "MapPartition
// write").
type WriteChannel struct {
	base
	opened    bool
	committed *wire.WriteCommitted
}

// OpenWrite opens a write channel and waits for WRITE_OPENED.
func OpenWrite(ctx context.Context, c *Conn, m *wire.WriteOpen) (*WriteChannel, error) {
	ch, err := c.register(ctx, func(id uint32) channel {
		w := &WriteChannel{}
		w.init(c, id)
		return w
	})
	if err != nil {
		return nil, err
	}
	w := ch.(*WriteChannel)
	c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, c.major, w.chID) })
	if err := w.wait(ctx, func() bool { return w.opened }); err != nil {
		w.abandon()
		return nil, err
	}
	return w, nil
}

// abandon closes a channel whose caller gives up without waiting.
func (b *base) abandon() {
	go func() { _ = b.closeChannel(context.Background(), wire.CodeOK, "abandoned") }()
}

func (w *WriteChannel) credit(n uint32) error { return w.addCredit(n) }

func (w *WriteChannel) deliver(_ *Conn, h *wire.Header, m wire.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.signal()
	switch m := m.(type) {
	case *wire.WriteOpened:
		if w.opened {
			return outOfOrder(w.chID, h.Type, "write")
		}
		w.opened = true
		w.remaining += uint64(m.Credit)
	case *wire.WriteCommitted:
		c := *m
		w.committed = &c
		w.terminalLocked(w, nil, false)
	case *wire.ErrorMsg:
		w.terminalLocked(w, remoteError(m, w.chID), false)
	case *wire.ChannelClosed:
		w.terminalLocked(w, errors.New("transport: channel closed"), true)
	default:
		return outOfOrder(w.chID, h.Type, "write")
	}
	return nil
}

// StartRegion sends REGION_START.
func (w *WriteChannel) StartRegion(m wire.RegionStart) error {
	if err := w.check(); err != nil {
		return err
	}
	w.c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, w.c.major, w.chID) })
	return nil
}

func (b *base) check() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		if b.err != nil {
			return b.err
		}
		return errors.New("transport: the channel has ended")
	}
	return nil
}

// Write sends one stored buffer, frame[HeaderSize:], as WRITE_DATA; the
// header goes into frame[:HeaderSize]. It waits for credit.
func (w *WriteChannel) Write(ctx context.Context, frame []byte) error {
	return w.sendData(ctx, wire.TypeWriteData, frame)
}

// FinishRegion sends REGION_FINISH.
func (w *WriteChannel) FinishRegion(m wire.RegionFinish) error {
	if err := w.check(); err != nil {
		return err
	}
	w.c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, w.c.major, w.chID) })
	return nil
}

// Finish sends WRITE_FINISH and waits for WRITE_COMMITTED; its totals must
// equal the client's.
func (w *WriteChannel) Finish(ctx context.Context, totals wire.WriteTotals) (*wire.WriteCommitted, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	m := wire.WriteFinish{WriteTotals: totals}
	w.c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, w.c.major, w.chID) })
	if err := w.wait(ctx, func() bool { return w.committed != nil }); err != nil {
		return nil, err
	}
	if w.committed.WriteTotals != totals {
		return w.committed, fmt.Errorf("transport: the worker committed totals %+v, the client sent %+v (a bug; report it)", w.committed.WriteTotals, totals)
	}
	return w.committed, nil
}

// Close abandons the channel (an uncommitted partition is discarded) and
// waits for CHANNEL_CLOSED.
func (w *WriteChannel) Close(ctx context.Context, reason wire.Code, msg string) error {
	return w.closeChannel(ctx, reason, msg)
}

// ---- ReducePartition push ----

// PushChannel pushes one producer attempt's segments to one
// ReducePartition (PROTOCOL.md, "ReducePartition push").
type PushChannel struct {
	base
	opened    bool
	held      uint32 // PUSH_OPENED's held, then the latest PUSH_ACK
	committed *wire.PushCommitted
	aborted   bool
}

// OpenPush opens a push channel and waits for PUSH_OPENED; Held tells
// which seqs the worker holds already.
func OpenPush(ctx context.Context, c *Conn, m *wire.PushOpen) (*PushChannel, error) {
	ch, err := c.register(ctx, func(id uint32) channel {
		p := &PushChannel{}
		p.init(c, id)
		return p
	})
	if err != nil {
		return nil, err
	}
	p := ch.(*PushChannel)
	c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, c.major, p.chID) })
	if err := p.wait(ctx, func() bool { return p.opened }); err != nil {
		p.abandon()
		return nil, err
	}
	return p, nil
}

func (p *PushChannel) credit(n uint32) error { return p.addCredit(n) }

func (p *PushChannel) deliver(_ *Conn, h *wire.Header, m wire.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.signal()
	switch m := m.(type) {
	case *wire.PushOpened:
		if p.opened {
			return outOfOrder(p.chID, h.Type, "push")
		}
		p.opened, p.held = true, m.Held
		p.remaining += uint64(m.Credit)
	case *wire.PushAck:
		if m.Held < p.held {
			return &wire.Error{Code: wire.CodeMalformed, Channel: p.chID, Msg: fmt.Sprintf("PUSH_ACK of %d after %d", m.Held, p.held)}
		}
		p.held = m.Held
	case *wire.PushCommitted:
		c := *m
		p.committed = &c
		p.terminalLocked(p, nil, false)
	case *wire.PushAborted:
		p.aborted = true
		p.terminalLocked(p, nil, false)
	case *wire.ErrorMsg:
		p.terminalLocked(p, remoteError(m, p.chID), false)
	case *wire.ChannelClosed:
		p.terminalLocked(p, errors.New("transport: channel closed"), true)
	default:
		return outOfOrder(p.chID, h.Type, "push")
	}
	return nil
}

// Held is the number of segments the worker acknowledged (seqs 0..n-1).
func (p *PushChannel) Held() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Push sends one stored segment, frame[HeaderSize:], as PUSH_DATA. It
// waits for credit.
func (p *PushChannel) Push(ctx context.Context, frame []byte) error {
	return p.sendData(ctx, wire.TypePushData, frame)
}

// WaitHeld waits until the worker holds n segments.
func (p *PushChannel) WaitHeld(ctx context.Context, n uint32) error {
	return p.wait(ctx, func() bool { return p.held >= n })
}

// Commit sends PUSH_COMMIT and waits for PUSH_COMMITTED.
func (p *PushChannel) Commit(ctx context.Context, segments uint32, payloadBytes uint64) (*wire.PushCommitted, error) {
	if err := p.SendCommit(segments, payloadBytes); err != nil {
		return nil, err
	}
	return p.WaitCommitted(ctx)
}

// SendCommit sends PUSH_COMMIT without waiting: a producer commits in many
// ReducePartitions at once, then waits for each (WaitCommitted).
func (p *PushChannel) SendCommit(segments uint32, payloadBytes uint64) error {
	if err := p.check(); err != nil {
		return err
	}
	m := wire.PushCommit{Segments: segments, PayloadBytes: payloadBytes}
	p.c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, p.c.major, p.chID) })
	return nil
}

// WaitCommitted waits for PUSH_COMMITTED.
func (p *PushChannel) WaitCommitted(ctx context.Context) (*wire.PushCommitted, error) {
	if err := p.wait(ctx, func() bool { return p.committed != nil }); err != nil {
		return nil, err
	}
	return p.committed, nil
}

// Abort sends PUSH_ABORT and waits for PUSH_ABORTED.
func (p *PushChannel) Abort(ctx context.Context) error {
	if err := p.check(); err != nil {
		return err
	}
	var m wire.PushAbort
	p.c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, p.c.major, p.chID) })
	return p.wait(ctx, func() bool { return p.aborted })
}

// Close ends the channel without committing or aborting (the segments held
// stay for a later channel of the attempt).
func (p *PushChannel) Close(ctx context.Context) error {
	return p.closeChannel(ctx, wire.CodeOK, "")
}

// ---- receive buffers ----

// Receive buffers come in power-of-two classes from 4 KiB; each class is a
// sync.Pool, so steady reading allocates nothing.
const (
	minBufShift = 12
	bufClasses  = 16 // up to 128 MiB
)

var bufPools [bufClasses]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a buffer of at least n bytes.
func getBuf(n int) *[]byte {
	k := bufClass(n)
	if k >= bufClasses {
		b := make([]byte, n)
		return &b
	}
	if v := bufPools[k].Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 1<<(k+minBufShift))
	return &b
}

func putBuf(b *[]byte) {
	k := bufClass(cap(*b))
	if k < bufClasses && cap(*b) == 1<<(k+minBufShift) {
		bufPools[k].Put(b)
	}
}
