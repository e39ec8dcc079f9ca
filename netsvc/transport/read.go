package transport

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// ErrPending is returned by ReadChannel.Poll when no frame has arrived.
var ErrPending = errors.New("transport: no read data yet")

// ReadFrame is the stored bytes of one READ_DATA frame: whole stored
// buffers or segments, exactly as the worker stores them (not yet checked:
// the consumer's decoder checks them). Release it when its bytes are
// decoded.
type ReadFrame struct {
	Stored  []byte
	Backlog uint64
	Next    uint32
	buf     *[]byte
}

// ReadChannel reads one partition (PROTOCOL.md, "Read"). Its credit is a
// receive window: the bytes of frames received and not yet released plus
// the credit outstanding stay within it, except that an item larger than
// the window is let through when the worker announces it.
type ReadChannel struct {
	base
	creditSlot int // guarded by Conn.ctlMu
	notify     func()
	window     uint64

	opened   *wire.ReadOpened
	frames   []ReadFrame
	head     int
	end      *wire.ReadEnd
	granted  uint64
	received uint64
	held     uint64 // received and not released
	next     uint32 // an announced item the credit does not cover
}

// DefaultReadWindow is a read channel's receive window.
const DefaultReadWindow = 1 << 20

// minReadGrant: grants smaller than this wait for more to be released.
const minReadGrant = 64 << 10

// OpenRead opens a read channel without waiting for READ_OPENED (the
// worker's answer and data arrive as frames; see Poll). m.Credit is set to
// the window. notify, if set, is called (from the connection's reading
// goroutine; it must not block) whenever Poll may have something new.
func OpenRead(ctx context.Context, c *Conn, m wire.ReadOpen, window uint64, notify func()) (*ReadChannel, error) {
	if window == 0 {
		window = DefaultReadWindow
	}
	window = min(window, 1<<32-1)
	ch, err := c.register(ctx, func(id uint32) channel {
		r := &ReadChannel{notify: notify, window: window, granted: window}
		r.init(c, id)
		return r
	})
	if err != nil {
		return nil, err
	}
	r := ch.(*ReadChannel)
	m.Credit = uint32(window)
	c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, c.major, r.chID) })
	return r, nil
}

func (r *ReadChannel) signalAll() {
	r.signal()
	if r.notify != nil {
		r.notify()
	}
}

func (r *ReadChannel) fail(err error) {
	r.base.fail(err)
	if r.notify != nil {
		r.notify()
	}
}

func (r *ReadChannel) credit(uint32) error {
	return &wire.Error{Code: wire.CodeOutOfOrder, Channel: r.chID, Msg: "write credit on a read channel"}
}

func (r *ReadChannel) deliver(_ *Conn, h *wire.Header, m wire.Message) error {
	r.mu.Lock()
	defer r.signalAll()
	defer r.mu.Unlock()
	switch m := m.(type) {
	case *wire.ReadOpened:
		if r.opened != nil {
			return outOfOrder(r.chID, h.Type, "read")
		}
		o := *m
		r.opened = &o
	case *wire.ReadEnd:
		if r.opened == nil {
			return outOfOrder(r.chID, h.Type, "read (before READ_OPENED)")
		}
		e := *m
		r.end = &e
		r.terminalLocked(r, nil, false)
	case *wire.ErrorMsg:
		r.terminalLocked(r, remoteError(m, r.chID), false)
	case *wire.ChannelClosed:
		r.terminalLocked(r, errors.New("transport: channel closed"), true)
	default:
		return outOfOrder(r.chID, h.Type, "read")
	}
	return nil
}

// receive reads a READ_DATA body of n stored bytes (the connection's
// reading goroutine).
func (r *ReadChannel) receive(c *Conn, h *wire.Header, f wire.ReadDataFields, n int) error {
	r.mu.Lock()
	switch {
	case r.opened == nil:
		r.mu.Unlock()
		return outOfOrder(r.chID, h.Type, "read (before READ_OPENED)")
	case r.end != nil:
		r.mu.Unlock()
		return outOfOrder(r.chID, h.Type, "read (after READ_END)")
	case uint64(n) > r.granted-r.received:
		r.mu.Unlock()
		return &wire.Error{Code: wire.CodeCreditExceeded, Channel: r.chID,
			Msg: fmt.Sprintf("READ_DATA of %d stored bytes with %d bytes of credit", n, r.granted-r.received)}
	}
	r.received += uint64(n)
	if n == 0 {
		r.next = f.Next
		r.grantLocked()
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	buf := getBuf(n)
	if err := c.fr.ReadFull((*buf)[:n]); err != nil {
		putBuf(buf)
		return err
	}
	r.mu.Lock()
	if r.closeSent {
		r.mu.Unlock()
		putBuf(buf)
		return nil
	}
	r.frames = append(r.frames, ReadFrame{Stored: (*buf)[:n], Backlog: f.Backlog, Next: f.Next, buf: buf})
	r.held += uint64(n)
	r.mu.Unlock()
	r.signalAll()
	return nil
}

// grantLocked grants credit when the window has room for at least a
// minimum grant, or when an announced item does not fit the credit.
func (r *ReadChannel) grantLocked() {
	if r.done || r.closeSent {
		return
	}
	remaining := r.granted - r.received
	var g uint64
	if r.window > r.held+remaining {
		g = r.window - r.held - remaining
	}
	var need uint64
	if uint64(r.next) > remaining {
		need = uint64(r.next) - remaining
	}
	if g < min(minReadGrant, r.window/2) && need == 0 {
		return
	}
	g = min(max(g, need), 1<<32-1)
	r.next = 0
	r.granted += g
	r.c.grantRead(r, uint32(g))
}

// Opened is READ_OPENED, once it has arrived.
func (r *ReadChannel) Opened() *wire.ReadOpened {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened
}

// WaitOpened waits for READ_OPENED (or the error that ended the channel).
func (r *ReadChannel) WaitOpened(ctx context.Context) (*wire.ReadOpened, error) {
	err := r.wait(ctx, func() bool { return r.opened != nil })
	return r.Opened(), err
}

// End is READ_END, once it has arrived.
func (r *ReadChannel) End() *wire.ReadEnd {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.end
}

// Poll returns the next frame without waiting; ErrPending when none has
// arrived, io.EOF after the last one (READ_END), or the error that ended
// the channel.
func (r *ReadChannel) Poll() (ReadFrame, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head < len(r.frames) {
		f := r.frames[r.head]
		r.frames[r.head] = ReadFrame{}
		r.head++
		if r.head == len(r.frames) {
			r.frames, r.head = r.frames[:0], 0
		}
		return f, nil
	}
	if r.end != nil {
		return ReadFrame{}, io.EOF
	}
	if r.done {
		if r.err != nil {
			return ReadFrame{}, r.err
		}
		return ReadFrame{}, errors.New("transport: the channel has ended")
	}
	return ReadFrame{}, ErrPending
}

// Next waits for the next frame; see Poll.
func (r *ReadChannel) Next(ctx context.Context) (ReadFrame, error) {
	for {
		f, err := r.Poll()
		if err != ErrPending {
			return f, err
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
			return ReadFrame{}, ctx.Err()
		}
	}
}

// Release gives a frame's buffer back and lets the worker send more.
func (r *ReadChannel) Release(f ReadFrame) {
	if f.buf == nil {
		return
	}
	n := uint64(len(f.Stored))
	putBuf(f.buf)
	r.mu.Lock()
	r.held -= n
	r.grantLocked()
	r.mu.Unlock()
}

// Close ends the channel early (reason OK), or because its data failed
// checks (reason CORRUPT_DATA), and waits for CHANNEL_CLOSED. Frames not
// yet consumed are dropped.
func (r *ReadChannel) Close(ctx context.Context, reason wire.Code, msg string) error {
	err := r.closeChannel(ctx, reason, msg)
	r.mu.Lock()
	for i := r.head; i < len(r.frames); i++ {
		putBuf(r.frames[i].buf)
	}
	r.frames, r.head = nil, 0
	r.mu.Unlock()
	return err
}

var _ io.Closer = (*Conn)(nil)
