// Package transport is the client side of the data-plane protocol
// (netsvc/PROTOCOL.md): one TCP connection per worker carrying many
// channels (Conn), a pool of such connections (Pool), and the three kinds of
// channel a task uses: MapPartition writes (WriteChannel), ReducePartition
// pushes (PushChannel) and reads (ReadChannel).
//
// A Conn has one reading goroutine, which never blocks on a channel: frames
// are queued to their channel (read data is bounded by the credit the
// channel granted), so a slow consumer holds back only its own credit.
// Control frames (credit, opens, commits) are coalesced into one write by a
// flusher goroutine; data frames are written by the caller, together with
// whatever control frames are queued before them, in one writev: the
// stored buffer travels from the caller's memory to the socket without a
// copy (the 20-byte frame header goes into headroom in front of it). A
// watchdog goroutine ends a connection that received nothing for the idle
// timeout, even while writes are blocked on a worker that reads nothing.
//
// Errors: a broken or lost connection fails every channel on it with a
// *ConnError (retryable); an ERROR from the worker is a *RemoteError with
// the protocol's code. Both say whether a retry may succeed.
package transport

import (
	"context"
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

// Config configures connections.
type Config struct {
	// ClientID names this process in the worker's logs (0-128 bytes).
	ClientID string
	// AuthToken is sent in HELLO when the workers require one.
	AuthToken string
	// MaxFrameBytes is the largest frame body this client accepts
	// (default wire.DefaultFrameLimit: every stored item fits).
	MaxFrameBytes uint32
	// DialTimeout bounds connecting and the handshake (default 10 s).
	DialTimeout time.Duration
	// Dial connects (default: net.Dialer).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	Log  *slog.Logger
}

func (c *Config) withDefaults() Config {
	o := *c
	if o.MaxFrameBytes == 0 {
		o.MaxFrameBytes = wire.DefaultFrameLimit
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = wire.HandshakeTimeout
	}
	if o.Dial == nil {
		o.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if len(o.ClientID) > wire.MaxClientIDSize {
		o.ClientID = o.ClientID[:wire.MaxClientIDSize]
	}
	return o
}

// ErrConnLost matches every *ConnError.
var ErrConnLost = errors.New("transport: connection lost")

// ConnError is the failure of a connection, given to every channel on it.
type ConnError struct {
	Addr string
	Err  error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("transport: connection to worker %s lost: %v", e.Addr, e.Err)
}
func (e *ConnError) Unwrap() error        { return e.Err }
func (e *ConnError) Is(target error) bool { return target == ErrConnLost }

// Retryable: a new connection may succeed, unless the worker refused this
// client for good (version, auth).
func (e *ConnError) Retryable() bool {
	var re *RemoteError
	if errors.As(e.Err, &re) {
		return re.Retryable
	}
	var we *wire.Error
	if errors.As(e.Err, &we) {
		return we.Code.Retryable()
	}
	return true
}

// RemoteError is an ERROR frame from the worker.
type RemoteError struct {
	Code      wire.Code
	Retryable bool
	Fatal     bool
	Channel   uint32
	// VersionMin and VersionMax are the versions the worker speaks.
	VersionMin, VersionMax wire.Version
	Msg                    string
}

func (e *RemoteError) Error() string {
	scope := "connection"
	if e.Channel != 0 {
		scope = fmt.Sprintf("channel %d", e.Channel)
	}
	return fmt.Sprintf("transport: worker error %s on %s: %s", e.Code.Name(), scope, e.Msg)
}

// Is matches the error's code (errors.Is(err, wire.CodeNotReady)).
func (e *RemoteError) Is(target error) bool {
	c, ok := target.(wire.Code)
	return ok && c == e.Code
}

func remoteError(m *wire.ErrorMsg, channel uint32) *RemoteError {
	return &RemoteError{Code: m.Code, Retryable: m.Retryable, Fatal: m.Fatal, Channel: channel,
		VersionMin: m.VersionMin, VersionMax: m.VersionMax, Msg: string(m.Message)}
}

// IsRetryable reports whether an error of this package says the operation
// may succeed when tried again.
func IsRetryable(err error) bool {
	var ce *ConnError
	if errors.As(err, &ce) {
		return ce.Retryable()
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Retryable
	}
	return false
}

// Conn is one connection to a worker.
type Conn struct {
	cfg    Config
	addr   string
	nc     net.Conn
	in     countingReader
	fr     *wire.FrameReader
	log    *slog.Logger
	credit wire.Credit // the read loop's CREDIT
	// fields is the read loop's READ_DATA scratch (a local would escape
	// into FrameReader.ReadFull and be allocated for every frame).
	fields [wire.ReadDataFieldsSize]byte

	// From HELLO_ACK.
	major    uint8
	Version  wire.Version
	WorkerID [16]byte
	limits   wire.HelloAck

	wmu     sync.Mutex // one writer of the socket at a time
	wbroken bool       // a write failed, maybe within a frame: nothing more may be written (wmu)
	bufs    net.Buffers
	iov     [2][]byte
	ctlMu   sync.Mutex
	ctl     []byte
	spare   []byte
	credits []wire.CreditEntry // read credit to send, coalesced
	credCh  []*ReadChannel
	flushC  chan struct{}
	last    atomic.Int64 // unix nanos of the last write
	// ending is the fatal error being sent: the connection's error, rather
	// than what a write it interrupts returns.
	ending atomic.Pointer[ConnError]

	mu      sync.Mutex
	chans   map[uint32]channel
	nextID  uint32
	closing bool
	err     error
	done    chan struct{}
	slots   chan struct{} // one per channel that may be open (HELLO_ACK's max channels)

	body []byte
	cb   wire.CreditBatch
}

// channel is what the read loop delivers a channel's frames to.
type channel interface {
	deliver(c *Conn, h *wire.Header, m wire.Message) error
	fail(err error)
	credit(n uint32) error
	id() uint32
}

type countingReader struct {
	r io.Reader
	n atomic.Uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// Dial connects to a worker and runs the handshake.
func Dial(ctx context.Context, addr string, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	nc, err := cfg.Dial(dctx, addr)
	if err != nil {
		return nil, &ConnError{Addr: addr, Err: err}
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &Conn{cfg: cfg, addr: addr, nc: nc, log: cfg.Log.With("worker", addr), chans: map[uint32]channel{},
		done: make(chan struct{}), flushC: make(chan struct{}, 1), body: make([]byte, wire.MaxControlBody)}
	c.in.r = nc
	c.cb.Entries = make([]wire.CreditEntry, 0, 64)
	if err := c.handshake(dctx); err != nil {
		nc.Close()
		return nil, &ConnError{Addr: addr, Err: err}
	}
	c.slots = make(chan struct{}, c.limits.MaxChannels)
	c.last.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.flusher()
	go c.watchdog()
	return c, nil
}

func (c *Conn) handshake(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		if err := c.nc.SetDeadline(dl); err != nil {
			return err
		}
	}
	hello := wire.Hello{VersionMin: wire.MinSupported, VersionMax: wire.Current, MaxFrameBytes: c.cfg.MaxFrameBytes,
		ClientID: []byte(c.cfg.ClientID), AuthToken: []byte(c.cfg.AuthToken)}
	if _, err := c.nc.Write(hello.AppendFrame(nil)); err != nil {
		return err
	}
	c.fr = wire.NewFrameReader(&c.in, wire.HeaderRules{MaxFrameBytes: c.cfg.MaxFrameBytes, Receiver: wire.SideClient})
	h, err := c.fr.Next()
	if err != nil {
		return err
	}
	body, err := c.fr.ReadBody(c.body)
	if err != nil {
		return err
	}
	switch h.Type {
	case wire.TypeError:
		var m wire.ErrorMsg
		if err := m.DecodeBody(body); err != nil {
			return err
		}
		return remoteError(&m, 0)
	case wire.TypeHelloAck:
	default:
		return fmt.Errorf("transport: %v in answer to HELLO", h.Type)
	}
	if err := c.limits.DecodeBody(body); err != nil {
		return err
	}
	v := c.limits.Version
	if v < wire.MinSupported || v > wire.Current {
		e := &wire.Error{Code: wire.CodeVersion, Fatal: true,
			Msg: fmt.Sprintf("the worker chose version %v; this client speaks %v to %v: upgrade the client", v, wire.MinSupported, wire.Current)}
		m := wire.NewErrorMsg(e, wire.MinSupported, wire.Current)
		_, _ = c.nc.Write(m.AppendFrame(nil, 0, 0))
		return e
	}
	c.Version, c.major, c.WorkerID = v, v.HeaderVersion(), c.limits.WorkerID
	c.fr.SetVersion(c.major)
	return c.nc.SetDeadline(time.Time{})
}

// Addr is the worker's address.
func (c *Conn) Addr() string { return c.addr }

// Limits are the worker's limits (HELLO_ACK).
func (c *Conn) Limits() wire.HelloAck { return c.limits }

// Done is closed when the connection has failed or closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended (nil while it works).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Channels is the number of channels open.
func (c *Conn) Channels() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.chans)
}

// Close closes the connection at once; open channels fail.
func (c *Conn) Close() error {
	c.failConn(&ConnError{Addr: c.addr, Err: errors.New("closed by the client")})
	return nil
}

// CloseGracefully sends CLOSE_CONNECTION, waits until every channel has
// ended (or ctx ends), then closes.
func (c *Conn) CloseGracefully(ctx context.Context) error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	var m wire.CloseConnection
	if dl, ok := ctx.Deadline(); ok {
		m.TimeoutMillis = uint32(max(time.Until(dl).Milliseconds(), 1))
	}
	c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, c.major) })
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for c.Channels() > 0 {
		select {
		case <-ctx.Done():
			return c.Close()
		case <-c.done:
			return nil
		case <-t.C:
		}
	}
	return c.Close()
}

// failConn ends the connection: every channel fails with err.
func (c *Conn) failConn(err error) {
	if e := c.ending.Load(); e != nil {
		err = e
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	chans := c.chans
	c.chans = map[uint32]channel{}
	close(c.done)
	c.mu.Unlock()
	_ = c.nc.Close()
	for _, ch := range chans {
		ch.fail(err)
	}
}

// fatal sends a fatal ERROR to the worker and ends the connection
// (PROTOCOL.md: a client does not repair a broken server).
func (c *Conn) fatal(e *wire.Error) {
	e.Fatal, e.Channel = true, 0
	ce := &ConnError{Addr: c.addr, Err: e}
	c.ending.CompareAndSwap(nil, ce)
	m := wire.NewErrorMsg(e, wire.MinSupported, wire.Current)
	// A write blocked on a worker that reads nothing holds wmu: the
	// deadline ends it within a second (its error gives way to ce) and
	// frees the lock. A write that ended within a frame leaves the stream
	// unusable: the ERROR is then not sent.
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.wmu.Lock()
	if !c.wbroken {
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.nc.Write(m.AppendFrame(nil, c.major, 0))
	}
	c.wmu.Unlock()
	c.failConn(ce)
}

// register opens a channel id for ch (taking a slot of the worker's
// channel limit, waiting for one if needed).
func (c *Conn) register(ctx context.Context, mk func(id uint32) channel) (channel, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, c.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		<-c.slots
		return nil, c.err
	}
	if c.closing {
		<-c.slots
		return nil, &ConnError{Addr: c.addr, Err: errors.New("the connection is closing")}
	}
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.chans[c.nextID]; !used {
			break
		}
	}
	ch := mk(c.nextID)
	c.chans[c.nextID] = ch
	return ch, nil
}

// unregister frees a channel's id after its terminal frame.
func (c *Conn) unregister(ch channel) {
	c.mu.Lock()
	if cur, ok := c.chans[ch.id()]; ok && cur == ch {
		delete(c.chans, ch.id())
		<-c.slots
	}
	closing := c.closing && len(c.chans) == 0
	c.mu.Unlock()
	if closing {
		c.Close()
	}
}

// queueCtl queues a control frame; the flusher writes it (with others).
func (c *Conn) queueCtl(appendFrame func([]byte) []byte) {
	c.ctlMu.Lock()
	c.flushCreditsLocked()
	c.ctl = appendFrame(c.ctl)
	c.ctlMu.Unlock()
	c.signalFlush()
}

func (c *Conn) signalFlush() {
	select {
	case c.flushC <- struct{}{}:
	default:
	}
}

// grantRead queues read credit for rc, coalesced with other grants.
func (c *Conn) grantRead(rc *ReadChannel, n uint32) {
	c.ctlMu.Lock()
	if s := rc.creditSlot; s > 0 && uint64(c.credits[s-1].Bytes)+uint64(n) < 1<<32 {
		c.credits[s-1].Bytes += n
	} else {
		c.credits = append(c.credits, wire.CreditEntry{Channel: rc.chID, Bytes: n})
		c.credCh = append(c.credCh, rc)
		rc.creditSlot = len(c.credits)
	}
	c.ctlMu.Unlock()
	c.signalFlush()
}

func (c *Conn) flushCreditsLocked() {
	for i := 0; i < len(c.credits); i += wire.MaxCreditEntries {
		batch := c.credits[i:min(i+wire.MaxCreditEntries, len(c.credits))]
		if len(batch) == 1 {
			m := wire.Credit{Bytes: batch[0].Bytes}
			c.ctl = m.AppendFrame(c.ctl, c.major, batch[0].Channel)
		} else {
			m := wire.CreditBatch{Entries: batch}
			c.ctl = m.AppendFrame(c.ctl, c.major)
		}
	}
	for _, rc := range c.credCh {
		rc.creditSlot = 0
	}
	clear(c.credCh)
	c.credits, c.credCh = c.credits[:0], c.credCh[:0]
}

// takeCtl returns the queued control frames (wmu held).
func (c *Conn) takeCtl() []byte {
	c.ctlMu.Lock()
	c.flushCreditsLocked()
	ctl := c.ctl
	c.ctl, c.spare = c.spare[:0], nil
	c.ctlMu.Unlock()
	return ctl
}

func (c *Conn) returnCtl(ctl []byte) {
	c.ctlMu.Lock()
	if c.spare == nil {
		c.spare = ctl[:0]
	}
	c.ctlMu.Unlock()
}

// writeData writes the queued control frames and a data frame in one
// gathered write.
func (c *Conn) writeData(frame []byte) error {
	c.wmu.Lock()
	ctl := c.takeCtl()
	c.iov[0], c.iov[1] = ctl, frame
	c.bufs = c.iov[:]
	_, err := c.bufs.WriteTo(c.nc)
	c.bufs = nil
	c.iov[0], c.iov[1] = nil, nil
	c.wbroken = c.wbroken || err != nil
	c.wmu.Unlock()
	c.returnCtl(ctl)
	if err != nil {
		e := &ConnError{Addr: c.addr, Err: err}
		c.failConn(e)
		return c.Err()
	}
	c.last.Store(time.Now().UnixNano())
	return nil
}

// flusher writes queued control frames and heartbeats.
func (c *Conn) flusher() {
	hb := time.Duration(c.limits.HeartbeatMillis) * time.Millisecond
	t := time.NewTicker(max(hb/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.flushC:
		case now := <-t.C:
			if now.Sub(time.Unix(0, c.last.Load())) >= hb {
				var m wire.Heartbeat
				c.queueCtl(func(dst []byte) []byte { return m.AppendFrame(dst, c.major) })
			}
		}
		c.wmu.Lock()
		ctl := c.takeCtl()
		var err error
		if len(ctl) > 0 {
			_, err = c.nc.Write(ctl)
		}
		c.wbroken = c.wbroken || err != nil
		c.wmu.Unlock()
		c.returnCtl(ctl)
		if err != nil {
			c.failConn(&ConnError{Addr: c.addr, Err: err})
			return
		}
		if len(ctl) > 0 {
			c.last.Store(time.Now().UnixNano())
		}
	}
}

// watchdog ends a connection that has received nothing for the idle
// timeout. It is a goroutine of its own: the flusher, or a data write, may
// be blocked on a worker that reads nothing, and the timeout must fire all
// the same.
func (c *Conn) watchdog() {
	idle := time.Duration(c.limits.IdleTimeoutMillis) * time.Millisecond
	t := time.NewTicker(max(idle/8, 10*time.Millisecond))
	defer t.Stop()
	lastRecv, recvAt := c.in.n.Load(), time.Now()
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			if n := c.in.n.Load(); n != lastRecv {
				lastRecv, recvAt = n, now
			} else if now.Sub(recvAt) >= idle {
				c.fatal(&wire.Error{Code: wire.CodeIdleTimeout, Msg: fmt.Sprintf("nothing received from the worker for %v", idle)})
				return
			}
		}
	}
}

// readLoop reads frames and hands them to their channels.
func (c *Conn) readLoop() {
	// One header for every frame: dispatch takes its address, so a header
	// declared in the loop would be allocated for each frame.
	var h wire.Header
	for {
		var err error
		h, err = c.fr.Next()
		if err == nil {
			err = c.dispatch(&h)
		}
		if err != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				c.fatal(we)
			} else {
				c.failConn(&ConnError{Addr: c.addr, Err: err})
			}
			return
		}
	}
}

// dispatch handles one frame. Errors end the connection: a *wire.Error is
// sent to the worker as a fatal ERROR first.
func (c *Conn) dispatch(h *wire.Header) error {
	switch h.Type {
	case wire.TypeReadData:
		return c.readData(h)
	case wire.TypeHeartbeat:
		return nil
	}
	// Credit comes with every buffer or so: decoded into the read loop's
	// own messages, it allocates nothing.
	var m wire.Message
	switch h.Type {
	case wire.TypeCreditBatch:
		m = &c.cb
	case wire.TypeCredit:
		m = &c.credit
	default:
		m = wire.NewMessage(h.Type)
	}
	body, err := c.fr.ReadBody(c.body)
	if err == nil {
		err = m.DecodeBody(body)
	}
	if err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			we.Channel = h.Channel
		}
		return err
	}
	switch h.Type {
	case wire.TypeError:
		em := m.(*wire.ErrorMsg)
		if h.Channel == 0 {
			re := remoteError(em, 0)
			if em.Fatal || em.Code.ConnectionFatal() {
				c.failConn(&ConnError{Addr: c.addr, Err: re})
				return io.EOF
			}
			c.log.Warn("transport: the worker reports a connection error", "err", re)
			return nil
		}
	case wire.TypeCloseConnection:
		c.mu.Lock()
		c.closing = true
		empty := len(c.chans) == 0
		c.mu.Unlock()
		if empty {
			c.Close()
		}
		return nil
	case wire.TypeCreditBatch:
		for _, e := range c.cb.Entries {
			if ch := c.lookup(e.Channel); ch != nil {
				if err := ch.credit(e.Bytes); err != nil {
					return err
				}
			}
		}
		return nil
	case wire.TypeCredit:
		if ch := c.lookup(h.Channel); ch != nil {
			return ch.credit(m.(*wire.Credit).Bytes)
		}
		return nil
	}
	ch := c.lookup(h.Channel)
	if ch == nil {
		return nil // a channel that is not open: discarded
	}
	return ch.deliver(c, h, m)
}

func (c *Conn) lookup(id uint32) channel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chans[id]
}

// readData reads a READ_DATA body into a receive buffer of its channel.
func (c *Conn) readData(h *wire.Header) error {
	if err := c.fr.ReadFull(c.fields[:]); err != nil {
		return err
	}
	f, err := wire.DecodeReadDataFields(h, c.fields[:])
	if err != nil {
		return err
	}
	ch := c.lookup(h.Channel)
	n := h.StoredLength()
	if ch == nil {
		return nil // discarded with its body
	}
	rc, ok := ch.(*ReadChannel)
	if !ok {
		return &wire.Error{Code: wire.CodeOutOfOrder, Channel: h.Channel, Msg: "READ_DATA on a write or push channel"}
	}
	return rc.receive(c, h, f, n)
}
