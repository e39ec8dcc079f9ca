// Package server is the worker's data-plane server: it accepts client
// connections, runs the protocol of netsvc/PROTOCOL.md on them, and connects
// their channels to the storage engine (writes and pushes) and to the disks'
// read schedulers (reads).
//
// # One connection
//
//	             read loop (one goroutine)                 writer (one goroutine)
//	socket ──▶ FrameReader ──▶ channel frames ─┐      ┌──▶ control frames (coalesced)
//	            │  WRITE_DATA / PUSH_DATA body │      │    CREDIT_BATCH, PUSH_ACK, ...
//	            ▼  read straight into the      │      │
//	        engine's reserved buffer (Reserve) │      ├──▶ READ_DATA: header + slices of
//	            or, if it would wait, into a   │      │    scheduler chunks (writev)
//	            staging buffer + channel op    │      │         ▲
//	            ▼                              ▼      │         │ Notify
//	        per-channel op queue ──▶ async worker ────┘    scheduler.Reader
//	        (open, region finish, commit, waits)
//
// The read loop never waits for a disk or for a slow channel: work that can
// block (opening a partition, finishing a region, a commit, waiting for
// engine memory) runs on the channel's own short-lived worker goroutine,
// which exists only while the channel has queued operations; frames of a
// channel with queued operations are queued behind them, so each channel's
// frames are handled in order while other channels go on.
//
// Credit is the back-pressure. A write channel's credit is what its engine
// writer can take without waiting (MapWriter.Available), so a correct client
// rarely sends a WRITE_DATA the server must wait for: its body lands in the
// engine's aligned buffer straight from the socket. Two exceptions: memory
// the engine takes back under pressure after the grant, and room for a
// whole buffer of the client's maximum when the engine has less than that
// (it is granted anyway, or a client with buffers larger than the engine's
// spare buffers could never send one). Such a body is read into staging
// memory of the connection and handed to the engine by the channel's
// worker, never by the read loop. Push credit comes from the
// connection's memory, because many producers share one ReducePartition's
// merge buffer. A peer that sends beyond its credit gets CREDIT_EXCEEDED on
// that channel, and the body is skipped.
//
// Read channels are owned by the connection's writer goroutine: the
// scheduler's Notify marks them ready, and the writer polls their chunks,
// checks the stored headers, cuts READ_DATA frames on item boundaries within
// the client's credit, writes them with writev and releases the chunks.
// Nothing allocates per buffer on either path.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// RuntimeMemoryLimit is the Go runtime's share of a worker process's
// memory beyond its pool (heap, stacks, runtime structures: channels,
// connections, indexes). A worker process sets it as the runtime's soft
// limit (debug.SetMemoryLimit), so that the collector runs before the
// process outgrows its pool by more; shuffle data itself lives in the pool,
// outside the Go heap.
const RuntimeMemoryLimit = 32 << 20

// Defaults of Config.
const (
	DefaultReadFrameBytes  = 1 << 20
	DefaultStagingBuffers  = 8
	DefaultShutdownTimeout = 30 * time.Second
	// minReadGrant is the smallest scheduler credit granted at once, unless
	// a reader needs less to finish an item: every grant may cost a read.
	minReadGrant = 64 << 10
)

// Config configures a Server.
type Config struct {
	// Store is the worker's storage engine.
	Store *engine.Store
	// Scheduler returns the read scheduler of a disk of Store.
	Scheduler func(d *engine.Disk) *scheduler.Scheduler
	// Name is the server name sent in HELLO_ACK (for the client's logs).
	Name string
	// AuthToken, when set, is required in every client's HELLO.
	AuthToken string

	// Limits announced in HELLO_ACK. Zero values are the protocol defaults
	// (wire.DefaultFrameLimit, wire.DefaultMaxChannels,
	// wire.DefaultConnectionMemory, 5 s, 30 s).
	MaxFrameBytes     uint32
	MaxChannels       uint32
	ConnectionMemory  uint64
	HeartbeatInterval time.Duration
	IdleTimeout       time.Duration

	// ReadFrameBytes is the size READ_DATA frames are cut to (an item
	// larger than it travels alone); default 1 MiB.
	ReadFrameBytes int
	// StagingBuffers bounds the pool buffers one connection holds for
	// bodies the engine could not take without waiting (default 8).
	StagingBuffers int
	// NoAutoFinalize: do not finalize a ReducePartition when every producer
	// of its dataset has committed in it (the control plane does it).
	NoAutoFinalize bool

	Log *slog.Logger
}

func (c *Config) withDefaults() Config {
	o := *c
	if o.MaxFrameBytes == 0 {
		o.MaxFrameBytes = wire.DefaultFrameLimit
	}
	if o.MaxChannels == 0 {
		o.MaxChannels = wire.DefaultMaxChannels
	}
	if o.ConnectionMemory == 0 {
		o.ConnectionMemory = wire.DefaultConnectionMemory
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = wire.DefaultHeartbeatInterval
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = wire.DefaultIdleTimeout
	}
	if o.ReadFrameBytes <= 0 {
		o.ReadFrameBytes = DefaultReadFrameBytes
	}
	if o.StagingBuffers <= 0 {
		o.StagingBuffers = DefaultStagingBuffers
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// Server serves the data plane of one worker.
type Server struct {
	cfg      Config
	store    *engine.Store
	log      *slog.Logger
	workerID [16]byte
	parts    partCache

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	finalizing sync.Map // *engine.ReducePartition being finalized
	conns      map[*conn]struct{}
	shutting   bool
	connWG     sync.WaitGroup
	closed     chan struct{}

	st counters
}

// New returns a server for the store.
func New(cfg Config) (*Server, error) {
	c := cfg.withDefaults()
	switch {
	case c.Store == nil || c.Scheduler == nil:
		return nil, errors.New("server: Config needs Store and Scheduler")
	case c.MaxFrameBytes < wire.MinFrameLimit:
		return nil, fmt.Errorf("server: max frame bytes %d below the protocol's minimum %d", c.MaxFrameBytes, wire.MinFrameLimit)
	case c.IdleTimeout <= c.HeartbeatInterval:
		return nil, fmt.Errorf("server: idle timeout %v must exceed the heartbeat interval %v", c.IdleTimeout, c.HeartbeatInterval)
	case len(c.Name) > wire.MaxServerName:
		c.Name = c.Name[:wire.MaxServerName]
	case len(c.AuthToken) > wire.MaxAuthTokenSize:
		return nil, fmt.Errorf("server: auth token of %d bytes, at most %d", len(c.AuthToken), wire.MaxAuthTokenSize)
	}
	s := &Server{cfg: c, store: c.Store, log: c.Log, listeners: map[net.Listener]struct{}{},
		conns: map[*conn]struct{}{}, closed: make(chan struct{})}
	id := c.Store.WorkerID()
	copy(s.workerID[:], id[:])
	s.parts.init(c.Store, c.Scheduler, c.Log)
	return s, nil
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("server: closed")

// Serve accepts connections on lis until the listener fails or the server
// shuts down; it returns ErrServerClosed then.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		lis.Close()
		return ErrServerClosed
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, lis)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := lis.Accept()
		if err != nil {
			s.mu.Lock()
			shutting := s.shutting
			s.mu.Unlock()
			if shutting {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true) // frames are coalesced by the writer; no Nagle delay on top
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.shutting {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		s.st.connsAccepted.Add(1)
		go func() {
			defer s.connWG.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// ListenAndServe listens on addr and serves.
func (s *Server) ListenAndServe(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(lis)
}

// Shutdown stops the server gracefully: it stops accepting, tells every
// client (CLOSE_CONNECTION) that it opens no new channels, lets the channels
// in flight finish (commits complete, data stays), and closes each
// connection once it has no channel left. When ctx ends first, the
// remaining channels end with SHUTTING_DOWN (retryable) and their
// connections close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		return s.waitConns(ctx)
	}
	s.shutting = true
	for lis := range s.listeners {
		lis.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	timeout := uint32(0)
	if dl, ok := ctx.Deadline(); ok {
		timeout = uint32(max(time.Until(dl).Milliseconds(), 1))
	}
	for _, c := range conns {
		c.beginClose(timeout)
	}
	err := s.waitConns(ctx)
	if err != nil {
		s.mu.Lock()
		for c := range s.conns {
			c.abort(wire.CodeShuttingDown, "the worker is shutting down")
		}
		s.mu.Unlock()
		s.connWG.Wait()
	}
	s.parts.closeAll()
	return err
}

func (s *Server) waitConns(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes every listener and connection at once; channels in flight
// end (uncommitted writes are discarded).
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Released closes the partitions of a released job or dataset (dataset
// "": the whole job) that the server keeps open for readers that may come,
// so that their files' space is freed at once. The engine's release itself
// ends the partitions' writers and readers.
func (s *Server) Released(job, dataset string) { s.parts.forget(job, dataset) }

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections      int   // open now
	ConnsAccepted    int64 // since start
	Channels         int   // open now, by kind below
	WriteChannels    int
	PushChannels     int
	ReadChannels     int
	ChannelsOpened   int64
	BytesReceived    int64 // stored bytes received in WRITE_DATA and PUSH_DATA
	BytesSent        int64 // stored bytes sent in READ_DATA
	FramesReceived   int64
	FramesSent       int64
	Writes           int64 // socket writes (writev calls)
	StagedBytes      int64 // bodies read into staging memory (engine not ready without waiting)
	ZeroCopyBytes    int64 // bodies read straight into engine buffers
	Commits          int64 // MapPartitions committed
	PushCommits      int64
	Finalized        int64 // ReducePartitions finalized by the server
	ReadsCompleted   int64
	PartitionOpens   int64 // MapPartitions opened for read channels (channels reading one at once share an open)
	Errors           int64 // ERROR frames sent on channels
	CreditViolations int64
	IdleTimeouts     int64
	ProtocolErrors   int64 // fatal connection errors found
	StagingInUse     int   // pool buffers held for staging now
	MemoryHeld       int64 // connection memory in use (credit outstanding, staged, read data queued)
}

type counters struct {
	connsAccepted, channelsOpened                  atomic.Int64
	bytesReceived, bytesSent                       atomic.Int64
	framesReceived, framesSent, writes             atomic.Int64
	stagedBytes, zeroCopyBytes                     atomic.Int64
	commits, pushCommits, finalized, readsComplete atomic.Int64
	errors, creditViolations, idleTimeouts         atomic.Int64
	protocolErrors                                 atomic.Int64
	stagingInUse                                   atomic.Int64
	memHeld                                        atomic.Int64
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		ConnsAccepted: s.st.connsAccepted.Load(), ChannelsOpened: s.st.channelsOpened.Load(),
		BytesReceived: s.st.bytesReceived.Load(), BytesSent: s.st.bytesSent.Load(),
		FramesReceived: s.st.framesReceived.Load(), FramesSent: s.st.framesSent.Load(), Writes: s.st.writes.Load(),
		StagedBytes: s.st.stagedBytes.Load(), ZeroCopyBytes: s.st.zeroCopyBytes.Load(),
		Commits: s.st.commits.Load(), PushCommits: s.st.pushCommits.Load(), Finalized: s.st.finalized.Load(),
		ReadsCompleted: s.st.readsComplete.Load(), Errors: s.st.errors.Load(),
		CreditViolations: s.st.creditViolations.Load(), IdleTimeouts: s.st.idleTimeouts.Load(),
		ProtocolErrors: s.st.protocolErrors.Load(), StagingInUse: int(s.st.stagingInUse.Load()),
		MemoryHeld: s.st.memHeld.Load(), PartitionOpens: s.parts.opens.Load(),
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	st.Connections = len(conns)
	for _, c := range conns {
		w, p, r := c.channelCounts()
		st.WriteChannels += w
		st.PushChannels += p
		st.ReadChannels += r
	}
	st.Channels = st.WriteChannels + st.PushChannels + st.ReadChannels
	return st
}
