package server

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// outbox is a connection's sending side: one goroutine (run) writes
// everything, so that control frames queued by any goroutine and the read
// channels' data leave in one gathered write per round.
//
// Control frames are encoded into ctl in the order they are queued. Credit
// grants and push acknowledgements are coalesced: a grant to a channel that
// has one pending adds to it, and all pending grants go out as one
// CREDIT_BATCH (CREDIT for a single channel) before the next other control
// frame, so that no frame overtakes a grant queued before it.
type outbox struct {
	c *conn

	mu          sync.Mutex
	ctl, spare  []byte
	credits     []wire.CreditEntry
	creditChans []*channel
	acks        []*channel
	ready       []*readChan
	readySpare  []*readChan
	reads       map[*readChan]struct{} // read channels the writer owns
	fatal       *wire.Error
	stopping    bool
	stopped     bool
	closeIdle   bool // close the connection once no channel is open
	wake        chan struct{}
	exited      chan struct{}
	started     atomic.Bool // run was started (not when the handshake failed)

	// The writer goroutine's own.
	iov      [][]byte
	bufs     net.Buffers
	arena    []byte
	touched  []*readChan
	lastSend time.Time
	cb       wire.CreditBatch
	pa       wire.PushAck
	cr       wire.Credit
}

const (
	arenaBytes       = 64 << 10 // frame headers and writer-made frames of one round
	arenaHeadroom    = 2 << 10  // the largest writer-made frame (an ERROR) fits
	iovMax           = 1000     // iovecs in one round (writev takes 1024)
	maxFramesPerPump = 4        // READ_DATA frames one channel adds to a round
)

func (o *outbox) init(c *conn) {
	o.c = c
	o.reads = map[*readChan]struct{}{}
	o.wake = make(chan struct{}, 1)
	o.exited = make(chan struct{})
	o.ctl = make([]byte, 0, 4096)
	o.spare = make([]byte, 0, 4096)
	o.arena = make([]byte, 0, arenaBytes)
	o.iov = make([][]byte, 0, iovMax+8)
	o.cb.Entries = make([]wire.CreditEntry, 0, 64)
}

func (o *outbox) wakeup() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// flushPendingLocked encodes the coalesced grants and acknowledgements.
func (o *outbox) flushPendingLocked() {
	v := o.c.major
	for i := 0; i < len(o.credits); i += wire.MaxCreditEntries {
		batch := o.credits[i:min(i+wire.MaxCreditEntries, len(o.credits))]
		if len(batch) == 1 {
			o.cr.Bytes = batch[0].Bytes
			o.ctl = o.cr.AppendFrame(o.ctl, v, batch[0].Channel)
		} else {
			o.cb.Entries = batch
			o.ctl = o.cb.AppendFrame(o.ctl, v)
		}
	}
	for _, ch := range o.creditChans {
		ch.creditSlot = 0
	}
	clear(o.creditChans)
	o.credits, o.creditChans = o.credits[:0], o.creditChans[:0]
	for _, ch := range o.acks {
		o.pa.Held = ch.ackHeld
		ch.ackQueued = false
		o.ctl = o.pa.AppendFrame(o.ctl, v, ch.id)
	}
	clear(o.acks)
	o.acks = o.acks[:0]
}

// grant queues n bytes of write credit for ch (called with ch.mu held).
func (o *outbox) grant(ch *channel, n uint64) {
	o.mu.Lock()
	for n > 0 {
		k := uint32(min(n, 1<<32-1))
		n -= uint64(k)
		if s := ch.creditSlot; s > 0 && uint64(o.credits[s-1].Bytes)+uint64(k) < 1<<32 {
			o.credits[s-1].Bytes += k
			continue
		}
		o.credits = append(o.credits, wire.CreditEntry{Channel: ch.id, Bytes: k})
		o.creditChans = append(o.creditChans, ch)
		ch.creditSlot = len(o.credits)
	}
	o.mu.Unlock()
	o.wakeup()
}

// ack queues a PUSH_ACK of held segments for ch (called with ch.mu held).
func (o *outbox) ack(ch *channel, held uint32) {
	o.mu.Lock()
	ch.ackHeld = held
	if !ch.ackQueued {
		ch.ackQueued = true
		o.acks = append(o.acks, ch)
	}
	o.mu.Unlock()
	o.wakeup()
}

// sendMsg queues a control frame (not on the hot path: it may allocate).
func (o *outbox) sendMsg(channel uint32, m wire.Message) {
	o.mu.Lock()
	o.flushPendingLocked()
	o.ctl = wire.AppendFrame(o.ctl, o.c.major, channel, m)
	o.mu.Unlock()
	o.wakeup()
}

func (o *outbox) sendError(channel uint32, code wire.Code, msg string) {
	m := wire.NewErrorMsg(&wire.Error{Code: code, Channel: channel, Msg: msg}, wire.MinSupported, wire.Current)
	o.sendMsg(channel, &m)
}

func (o *outbox) sendChannelClosed(channel uint32) { o.sendMsg(channel, &wire.ChannelClosed{}) }

func (o *outbox) sendCloseConnection(timeoutMillis uint32) {
	o.mu.Lock()
	o.closeIdle = true
	o.mu.Unlock()
	o.sendMsg(0, &wire.CloseConnection{TimeoutMillis: timeoutMillis})
}

// sendFatal queues a fatal ERROR on channel 0; the writer sends it after
// what is queued and closes its side.
func (o *outbox) sendFatal(e *wire.Error) {
	o.mu.Lock()
	if o.fatal == nil {
		o.fatal = e
	}
	o.mu.Unlock()
	o.wakeup()
}

// closeWhenDone closes the connection once its channels' last frames are
// written.
func (o *outbox) closeWhenDone() {
	o.mu.Lock()
	o.closeIdle = true
	o.mu.Unlock()
	o.wakeup()
}

// markReady queues a read channel for the writer's next round.
func (o *outbox) markReady(rc *readChan) {
	if rc.inReady.Swap(true) {
		return
	}
	o.mu.Lock()
	o.ready = append(o.ready, rc)
	o.mu.Unlock()
	o.wakeup()
}

// stop ends the writer (the read loop has ended) and waits for it. A fatal
// ERROR queued is still written, within a second.
func (o *outbox) stop() {
	if !o.started.Load() {
		return // the handshake failed: no writer ever ran
	}
	o.mu.Lock()
	o.stopping = true
	o.mu.Unlock()
	o.wakeup()
	select {
	case <-o.exited:
		return
	case <-time.After(2 * time.Second):
	}
	// A write is stuck on a peer that does not read: unblock it.
	_ = o.c.nc.SetWriteDeadline(time.Now())
	<-o.exited
}

// run is the writer goroutine.
func (o *outbox) run() {
	defer func() {
		o.mu.Lock()
		o.stopped = true
		o.mu.Unlock()
		close(o.exited)
	}()
	ticker := time.NewTicker(o.tickInterval())
	defer ticker.Stop()
	o.lastSend = time.Now()
	for {
		select {
		case <-o.wake:
		case now := <-ticker.C:
			o.tick(now)
		}
		if !o.flush() {
			return
		}
	}
}

func (o *outbox) tickInterval() time.Duration {
	cfg := &o.c.s.cfg
	return max(min(cfg.HeartbeatInterval, cfg.IdleTimeout-cfg.HeartbeatInterval)/4, 10*time.Millisecond)
}

// watchIdle ends a connection that received nothing for the idle timeout.
// It runs on its own goroutine, not the writer's: a peer that sends nothing
// may read nothing either, and the writer then blocks in a write for as
// long as the peer's socket stays open, holding the read chunks it was
// sending. The fatal ERROR goes out through the writer; if the writer has
// not ended a second later it is stuck in such a write, which is made to
// fail so that the connection closes without the ERROR.
func (o *outbox) watchIdle() {
	cfg := &o.c.s.cfg
	ticker := time.NewTicker(o.tickInterval())
	defer ticker.Stop()
	lastRecv, recvAt := o.c.in.n.Load(), time.Now()
	for {
		select {
		case <-o.exited:
			return
		case now := <-ticker.C:
			if n := o.c.in.n.Load(); n != lastRecv {
				lastRecv, recvAt = n, now
				continue
			}
			if now.Sub(recvAt) < cfg.IdleTimeout {
				continue
			}
			o.c.s.st.idleTimeouts.Add(1)
			o.c.log.Info("server: connection idle; closing", "idle", now.Sub(recvAt))
			o.c.fatalSent.Store(true)
			o.sendFatal(&wire.Error{Code: wire.CodeIdleTimeout, Fatal: true,
				Msg: "nothing received for " + cfg.IdleTimeout.String()})
		}
		select {
		case <-o.exited:
		case <-time.After(time.Second):
			_ = o.c.nc.SetWriteDeadline(time.Now())
		}
		return
	}
}

// tick sends a heartbeat when nothing was sent for the heartbeat interval.
func (o *outbox) tick(now time.Time) {
	cfg := &o.c.s.cfg
	if now.Sub(o.lastSend) >= cfg.HeartbeatInterval {
		var hb wire.Heartbeat
		o.mu.Lock()
		o.flushPendingLocked()
		o.ctl = hb.AppendFrame(o.ctl, o.c.major)
		o.mu.Unlock()
	}
}

// room reports whether the round has space for another frame.
func (o *outbox) room() bool {
	return cap(o.arena)-len(o.arena) >= arenaHeadroom && len(o.iov) < iovMax
}

// frame appends a writer-made frame (in the arena) to the round.
func (o *outbox) frame(start int) {
	o.iov = append(o.iov, o.arena[start:len(o.arena):len(o.arena)])
}

// flush writes rounds until nothing is left; false ends the writer.
func (o *outbox) flush() bool {
	for {
		o.mu.Lock()
		o.flushPendingLocked()
		ctl := o.ctl
		o.ctl, o.spare = o.spare, nil
		ready := o.ready
		o.ready, o.readySpare = o.readySpare[:0], nil
		fatal, stopping, closeIdle := o.fatal, o.stopping, o.closeIdle
		o.mu.Unlock()
		if stopping && fatal == nil {
			o.giveBack(ctl, ready)
			return false
		}
		o.iov, o.arena = o.iov[:0], o.arena[:0]
		if len(ctl) > 0 {
			o.iov = append(o.iov, ctl)
		}
		for i, rc := range ready {
			if !o.room() {
				for _, rest := range ready[i:] {
					rest.inReady.Store(false)
					o.markReady(rest)
				}
				break
			}
			rc.inReady.Store(false)
			if rc.pump(o) {
				o.markReady(rc)
			}
		}
		clear(ready)
		if fatal != nil {
			m := wire.NewErrorMsg(fatal, wire.MinSupported, wire.Current)
			start := len(o.arena)
			o.arena = m.AppendFrame(o.arena, o.c.major, 0)
			o.frame(start)
		}
		if len(o.iov) > 0 {
			if !o.write() {
				o.giveBack(ctl, ready)
				return false
			}
		}
		o.afterWrite()
		o.giveBack(ctl, ready)
		if fatal != nil {
			o.closeSend()
			return false
		}
		if len(o.iov) == 0 {
			if closeIdle && o.idle() {
				o.closeSend()
				return false
			}
			return true
		}
	}
}

// giveBack returns the round's buffers for reuse.
func (o *outbox) giveBack(ctl []byte, ready []*readChan) {
	o.mu.Lock()
	o.spare = ctl[:0]
	o.readySpare = ready[:0]
	o.mu.Unlock()
}

// idle reports whether the connection has no channel open.
func (o *outbox) idle() bool {
	c := o.c
	c.chMu.Lock()
	defer c.chMu.Unlock()
	return len(c.chans) == 0
}

// write sends the round with one gathered write.
func (o *outbox) write() bool {
	o.bufs = o.iov
	n := 0
	for _, b := range o.iov {
		n += len(b)
	}
	_, err := o.bufs.WriteTo(o.c.nc)
	o.bufs = nil
	if err != nil {
		_ = o.c.nc.Close() // the read loop sees it and tears down
		return false
	}
	o.lastSend = time.Now()
	o.c.s.st.writes.Add(1)
	return true
}

// afterWrite lets the read channels of the round release what was sent.
func (o *outbox) afterWrite() {
	for _, rc := range o.touched {
		rc.afterWrite()
	}
	clear(o.touched)
	o.touched = o.touched[:0]
}

// closeSend ends the sending side after the last frame: the peer reads it
// before EOF. The read loop then reads what is left for at most a second.
func (o *outbox) closeSend() {
	if tc, ok := o.c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = o.c.nc.SetReadDeadline(time.Now().Add(time.Second))
}

// releaseAll drops every read channel after the writer ended (teardown).
func (o *outbox) releaseAll() {
	o.mu.Lock()
	reads := make([]*readChan, 0, len(o.reads))
	for rc := range o.reads {
		reads = append(reads, rc)
	}
	o.mu.Unlock()
	for _, rc := range reads {
		rc.cleanup()
	}
}
