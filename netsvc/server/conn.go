package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// conn is one client connection: its read loop (the goroutine of serve),
// its writer (outbox.run), its idle watchdog (outbox.watchIdle), and its
// channels.
type conn struct {
	s   *Server
	nc  net.Conn
	in  countingReader
	fr  *wire.FrameReader
	log *slog.Logger

	major    uint8 // negotiated major, the version byte of every frame
	peerMax  uint32
	clientID string

	ctx    context.Context
	cancel context.CancelFunc

	chMu    sync.Mutex
	chans   map[uint32]*channel
	kinds   [3]int // open channels by kind: write, push, read
	closing bool   // CLOSE_CONNECTION sent or received: no new channels
	dead    bool   // the connection is being torn down

	out   outbox
	mem   memBudget
	stage staging
	wg    sync.WaitGroup // channel workers and openers

	closeOnce sync.Once
	fatalSent atomic.Bool

	// Read-loop scratch: control bodies, a segment header, decode targets.
	body   []byte
	segHdr [wire.SegmentHeaderSize]byte
	cb     wire.CreditBatch
	credit wire.Credit
	ctlOp  op
}

// countingReader counts the bytes received, for idle detection: any byte
// is activity, so a long frame on a slow link does not look idle.
type countingReader struct {
	r io.Reader
	n atomic.Uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, chans: map[uint32]*channel{}, body: make([]byte, wire.MaxControlBody)}
	c.in.r = nc
	c.log = s.log.With("peer", nc.RemoteAddr().String())
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.cb.Entries = make([]wire.CreditEntry, 0, 64)
	c.mem.init(c, int64(s.cfg.ConnectionMemory))
	c.stage.init(c, s.store.Pool(), s.cfg.StagingBuffers)
	c.out.init(c)
	return c
}

// serve runs the connection until it ends.
func (c *conn) serve() {
	defer c.teardown()
	if !c.handshake() {
		return
	}
	c.out.started.Store(true)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.out.run()
	}()
	go func() {
		defer c.wg.Done()
		c.out.watchIdle()
	}()
	c.readLoop()
}

// handshake reads HELLO and answers HELLO_ACK, or a fatal ERROR.
func (c *conn) handshake() bool {
	cfg := &c.s.cfg
	if err := c.nc.SetDeadline(time.Now().Add(wire.HandshakeTimeout)); err != nil {
		return false
	}
	c.fr = wire.NewFrameReader(&c.in, wire.HeaderRules{MaxFrameBytes: cfg.MaxFrameBytes, Receiver: wire.SideServer})
	h, err := c.fr.Next()
	if err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			we.Fatal = true
			if we.Code != wire.CodeUnknownType && we.Code != wire.CodeMalformed {
				c.fatalDirect(we, 0)
			} else {
				c.fatalDirect(&wire.Error{Code: wire.CodeProtocol, Fatal: true, Msg: "the first frame must be a HELLO: " + we.Msg}, 0)
			}
		}
		return false
	}
	if h.Type != wire.TypeHello {
		c.fatalDirect(&wire.Error{Code: wire.CodeProtocol, Fatal: true, Msg: fmt.Sprintf("the first frame is %v, not HELLO", h.Type)}, 0)
		return false
	}
	body, err := c.fr.ReadBody(c.body)
	var hello wire.Hello
	if err == nil {
		err = hello.DecodeBody(body)
	}
	if err != nil {
		var we *wire.Error
		if !errors.As(err, &we) {
			return false // the connection broke
		}
		we.Fatal = true
		c.fatalDirect(we, 0)
		return false
	}
	v, ok := wire.Negotiate(hello.VersionMin, hello.VersionMax, wire.MinSupported, wire.Current)
	if !ok {
		c.fatalDirect(&wire.Error{Code: wire.CodeVersion, Fatal: true,
			Msg: wire.VersionMismatchMessage(hello.VersionMin, hello.VersionMax, wire.MinSupported, wire.Current)}, 0)
		return false
	}
	if tok := cfg.AuthToken; tok != "" && subtle.ConstantTimeCompare([]byte(tok), hello.AuthToken) != 1 {
		c.fatalDirect(&wire.Error{Code: wire.CodeAuthFailed, Fatal: true, Msg: "the auth token is missing or wrong"}, 0)
		return false
	}
	c.major = v.HeaderVersion()
	c.peerMax = hello.MaxFrameBytes
	c.clientID = string(hello.ClientID)
	c.log = c.log.With("client", c.clientID)
	ack := wire.HelloAck{Version: v, WorkerID: c.s.workerID, MaxFrameBytes: cfg.MaxFrameBytes, MaxChannels: cfg.MaxChannels,
		MemoryBytes: cfg.ConnectionMemory, HeartbeatMillis: uint32(cfg.HeartbeatInterval.Milliseconds()),
		IdleTimeoutMillis: uint32(cfg.IdleTimeout.Milliseconds()), ServerName: []byte(cfg.Name)}
	if _, err := c.nc.Write(ack.AppendFrame(nil)); err != nil {
		return false
	}
	c.fr.SetVersion(c.major)
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return false
	}
	return true
}

// fatalDirect sends a fatal ERROR before the writer runs (the handshake),
// then closes as PROTOCOL.md says: sending side first, then what arrives is
// discarded until EOF or for a second.
func (c *conn) fatalDirect(e *wire.Error, version uint8) {
	c.s.st.protocolErrors.Add(1)
	m := wire.NewErrorMsg(e, wire.MinSupported, wire.Current)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.nc.Write(m.AppendFrame(nil, version, 0)); err != nil {
		return
	}
	c.lingerClose()
}

// lingerClose shuts down the sending side and discards what arrives until
// EOF or for at most a second, so that the peer reads our last frames
// rather than a reset.
func (c *conn) lingerClose() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	var buf [4096]byte
	for {
		if _, err := c.nc.Read(buf[:]); err != nil {
			return
		}
	}
}

// readLoop reads and dispatches frames until the connection ends.
func (c *conn) readLoop() {
	for {
		if c.fatalSent.Load() {
			return // the writer sends the ERROR; teardown reads what is left
		}
		h, err := c.fr.Next()
		if err != nil {
			if !c.headerError(&h, err) {
				return
			}
			continue
		}
		c.s.st.framesReceived.Add(1)
		if err := c.dispatch(&h); err != nil {
			var we *wire.Error
			if errors.As(err, &we) && we.Fatal {
				c.fatal(we)
			}
			return
		}
	}
}

// headerError handles a header the FrameReader refused; it reports whether
// the connection goes on.
func (c *conn) headerError(h *wire.Header, err error) bool {
	var we *wire.Error
	if !errors.As(err, &we) {
		return false // EOF or a broken socket
	}
	if we.Fatal {
		c.fatal(we)
		return false
	}
	// The header is sound; its body is skipped by the next call of Next.
	if h.Channel == 0 {
		c.sendError(0, we.Code, we.Msg)
		return true
	}
	c.channelError(h.Channel, we.Code, we.Msg)
	return true
}

// fatal sends a fatal ERROR on channel 0 through the writer (after what is
// queued) and ends the connection.
func (c *conn) fatal(e *wire.Error) {
	if c.fatalSent.Swap(true) {
		return
	}
	c.s.st.protocolErrors.Add(1)
	e.Fatal = true
	e.Channel = 0
	c.out.sendFatal(e)
}

// dispatch handles one frame whose header is valid. A returned error ends
// the connection (a fatal *wire.Error is sent first).
func (c *conn) dispatch(h *wire.Header) error {
	switch h.Type {
	case wire.TypeHeartbeat:
		return nil
	case wire.TypeCloseConnection:
		var m wire.CloseConnection
		if err := c.readControl(h, &m); err != nil {
			return err
		}
		c.peerClose(m.TimeoutMillis)
		return nil
	case wire.TypeError:
		var m wire.ErrorMsg
		if err := c.readControl(h, &m); err != nil {
			return err
		}
		c.log.Warn("server: the client reports an error", "code", m.Code, "fatal", m.Fatal, "message", string(m.Message))
		if m.Fatal {
			return io.EOF
		}
		return nil
	case wire.TypeCreditBatch:
		if err := c.readControl(h, &c.cb); err != nil {
			return err
		}
		for _, e := range c.cb.Entries {
			c.readCredit(e.Channel, e.Bytes, true)
		}
		return nil
	case wire.TypeCredit:
		if err := c.readControl(h, &c.credit); err != nil {
			return err
		}
		c.readCredit(h.Channel, c.credit.Bytes, false)
		return nil
	case wire.TypeCloseChannel:
		var m wire.CloseChannel
		if err := c.readControl(h, &m); err != nil {
			return err
		}
		c.closeChannel(h.Channel, m.Reason)
		return nil
	case wire.TypeWriteOpen, wire.TypePushOpen, wire.TypeReadOpen:
		return c.open(h)
	case wire.TypeWriteData:
		return c.writeData(h)
	case wire.TypePushData:
		return c.pushData(h)
	}
	return c.channelControl(h)
}

// readControl reads a control body into c.body, checks it and decodes it
// into m. A bad body on channel 0 is fatal; on a channel it is answered with
// an ERROR that ends the channel, and errSkip tells the caller to go on.
func (c *conn) readControl(h *wire.Header, m wire.Message) error {
	body, err := c.fr.ReadBody(c.body)
	if err == nil {
		err = m.DecodeBody(body)
	}
	if err == nil {
		return nil
	}
	var we *wire.Error
	if !errors.As(err, &we) {
		return err // the socket broke
	}
	we.Channel = h.Channel
	if h.Channel == 0 {
		we.Fatal = true
		return we
	}
	c.channelError(h.Channel, we.Code, we.Msg)
	return errSkip
}

// errSkip: the frame was answered with an ERROR; the connection goes on.
var errSkip = errors.New("server: frame refused")

// sendError queues an ERROR on a channel (0: the connection, not fatal).
func (c *conn) sendError(channel uint32, code wire.Code, msg string) {
	if channel != 0 {
		c.s.st.errors.Add(1)
	}
	c.out.sendError(channel, code, msg)
}

// channelError answers a frame error on a channel: the channel, if open,
// ends with the ERROR (PROTOCOL.md, "Errors in frames"); if not, the ERROR
// is sent all the same.
func (c *conn) channelError(id uint32, code wire.Code, msg string) {
	c.chMu.Lock()
	ch := c.chans[id]
	c.chMu.Unlock()
	if ch == nil {
		c.sendError(id, code, msg)
		return
	}
	ch.end(code, msg)
}

// lookup returns the open channel id, or nil.
func (c *conn) lookup(id uint32) *channel {
	c.chMu.Lock()
	ch := c.chans[id]
	c.chMu.Unlock()
	return ch
}

// remove drops a channel from the table once its terminal frame is
// decided; a new OPEN of the id is then a new channel.
func (c *conn) remove(ch *channel) {
	c.chMu.Lock()
	if c.chans[ch.id] == ch {
		delete(c.chans, ch.id)
		c.kinds[ch.kindIndex()]--
	}
	empty := len(c.chans) == 0
	closing := c.closing
	c.chMu.Unlock()
	if empty && closing {
		c.out.wakeup() // a closing connection closes once its channels are done
	}
}

func (c *conn) channelCounts() (w, p, r int) {
	c.chMu.Lock()
	defer c.chMu.Unlock()
	return c.kinds[0], c.kinds[1], c.kinds[2]
}

// readCredit applies a client grant to a read channel.
func (c *conn) readCredit(id, n uint32, batch bool) {
	ch := c.lookup(id)
	if ch == nil {
		return // not open: it ended while the grant was in flight
	}
	if ch.r == nil {
		if batch {
			ch.end(wire.CodeOutOfOrder, "CREDIT_BATCH entry for a write or push channel: only the server grants write credit")
		} else {
			ch.end(wire.CodeOutOfOrder, "CREDIT from the client on a write or push channel")
		}
		return
	}
	ch.r.addCredit(uint64(n))
}

// closeChannel handles CLOSE_CHANNEL: the channel ends, and CHANNEL_CLOSED
// answers it always, even for a channel that is not open.
func (c *conn) closeChannel(id uint32, reason wire.Code) {
	ch := c.lookup(id)
	if ch == nil {
		c.out.sendChannelClosed(id)
		return
	}
	if reason != wire.CodeOK {
		c.log.Info("server: the client closes a channel", "channel", id, "reason", reason)
	}
	ch.closeByClient()
}

// peerClose handles the client's CLOSE_CONNECTION: no new channels; the
// client closes the connection when its channels are done.
func (c *conn) peerClose(timeoutMillis uint32) {
	c.chMu.Lock()
	c.closing = true
	c.chMu.Unlock()
	if timeoutMillis > 0 {
		time.AfterFunc(time.Duration(timeoutMillis)*time.Millisecond, func() {
			c.abort(wire.CodeShuttingDown, "the connection's close timeout passed")
		})
	}
}

// beginClose starts a server-side graceful close (Shutdown): the client is
// told with CLOSE_CONNECTION, new OPENs are refused with SHUTTING_DOWN, and
// the writer closes the connection once no channel is open.
func (c *conn) beginClose(timeoutMillis uint32) {
	c.chMu.Lock()
	c.closing = true
	c.chMu.Unlock()
	c.out.sendCloseConnection(timeoutMillis)
}

// abort ends every channel with code and closes the connection.
func (c *conn) abort(code wire.Code, msg string) {
	c.chMu.Lock()
	chans := make([]*channel, 0, len(c.chans))
	for _, ch := range c.chans {
		chans = append(chans, ch)
	}
	c.chMu.Unlock()
	for _, ch := range chans {
		ch.end(code, msg)
	}
	c.out.closeWhenDone()
}

// teardown runs when the read loop ends: the socket closes, the writer
// stops, every channel's state is dropped (writers aborted, readers
// cancelled, chunks and staging buffers returned) and the workers are
// waited for.
func (c *conn) teardown() {
	c.closeOnce.Do(func() {
		c.chMu.Lock()
		c.dead = true
		chans := make([]*channel, 0, len(c.chans))
		for _, ch := range c.chans {
			chans = append(chans, ch)
		}
		c.chMu.Unlock()
		c.out.stop()
		if c.fatalSent.Load() {
			// The ERROR is written and the sending side shut: read what
			// arrives until EOF or the writer's deadline, so that the peer
			// gets the ERROR rather than a reset.
			var buf [4096]byte
			for {
				if _, err := c.nc.Read(buf[:]); err != nil {
					break
				}
			}
		}
		c.cancel()
		for _, ch := range chans {
			ch.drop()
		}
		c.wg.Wait()
		_ = c.nc.Close()
		c.out.releaseAll()
		c.stage.close()
		c.mem.close()
	})
}
