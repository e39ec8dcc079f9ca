package scheduler

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
)

// Policy chooses the order of reads.
type Policy uint8

const (
	// Elevator sweeps the disk in one direction by physical position
	// (C-SCAN), merges adjacent pieces of all readers into large reads,
	// ages, and reads ahead. The default.
	Elevator Policy = iota
	// FIFO reads each piece on its own, in the order the pieces became
	// pending: the baseline the elevator is measured against.
	FIFO
)

func (p Policy) String() string {
	switch p {
	case Elevator:
		return "elevator"
	case FIFO:
		return "fifo"
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// Defaults.
const (
	DefaultMaxReadBytes  = 4 << 20
	DefaultMergeGapBytes = 64 << 10
	DefaultDepth         = 4
	DefaultDeadline      = 500 * time.Millisecond
	// DefaultIndexCacheBytes is the index-block cache's budget: 16 MiB
	// holds 4,096 full index blocks, the index of 4 million subpartition
	// ranges in dense blocks.
	DefaultIndexCacheBytes = 16 << 20
)

// Config sets up a scheduler. Zero values mean the defaults.
type Config struct {
	// IO is the disk's IO seam; every read goes through it.
	IO diskio.IO
	// Buffers is the read-buffer budget: every byte read comes into a
	// buffer of this share, and the scheduler never holds more than its
	// limit (read-ahead cache included). The pool's buffer size is the
	// unit of reads (see MaxReadBytes) and of the read-ahead cache.
	Buffers *mem.Share
	Policy  Policy
	// MaxReadBytes bounds one merged read (default 4 MiB). A read is
	// issued as consecutive requests of one pool buffer each, submitted
	// together, so the block layer sees one sequential stream.
	MaxReadBytes int
	// MergeGapBytes is the largest hole between two pending pieces of one
	// file that a read covers rather than seeking over (default 64 KiB:
	// 0.3 ms of transfer on the model disk against ~5 ms for a seek and
	// half a turn). Negative: merge only touching pieces.
	MergeGapBytes int
	// Depth is the number of reads in flight (default 4).
	Depth int
	// Deadline bounds how long a pending piece waits while others are
	// served (default 500 ms): the sweep jumps to the oldest piece once it
	// has waited this long (looking every 16 reads).
	Deadline time.Duration
	// CacheBytes is the read-ahead budget: bytes of pool buffers the cache
	// may pin, out of the Buffers share. Zero means half of the share, the
	// most it may be; negative turns read-ahead off. Read-ahead pays when it
	// holds about one buffer for every (file, region) that consumers read at
	// a time; with less, slots are evicted half used and read again (a
	// quarter of a 384 MiB share, 96 slots for 64 producers' two regions
	// each, read 2.18 bytes from the disk per byte stored; half read 1.16),
	// and with far less it holds itself back. Live reads take buffers back
	// from the cache when they need them.
	CacheBytes int64
	// ReadAheadBytes extends reads further, past the end of the slot that
	// holds the last byte their readers need (rounded up to whole slots).
	// Zero: reads end with that slot, which is read-ahead enough when
	// consumers come in subpartition order.
	ReadAheadBytes int64
	// IndexCacheBytes is the budget of the index-block cache (default 16
	// MiB of heap, outside the pool); negative: no index cache.
	IndexCacheBytes int64
	// Trace records every read issued (see Trace), for benchmarks and
	// tests: the record grows until Trace is called.
	Trace bool
	// NoFiemap orders files by (file, offset) even where FIEMAP works.
	NoFiemap bool
	// Now is the clock for aging; nil means time.Now. Tests use it.
	Now func() time.Time
}

// Stats is a snapshot of the scheduler's counters.
type Stats struct {
	Readers  int // registered and not finished
	Pending  int // pieces waiting for a read
	InFlight int // reads in flight

	Reads     int64 // disk reads issued
	ReadBytes int64 // bytes they asked for
	Requests  int64 // IO requests (one per pool buffer)
	Pieces    int64 // reader pieces served by disk reads: Pieces/Reads is the merge factor
	// DeliveredBytes are bytes queued to readers, from disk or cache.
	DeliveredBytes int64
	AgedReads      int64 // reads started by a piece past the deadline
	Passes         int64 // sweeps that wrapped around
	// MaxWait is the longest a piece waited from becoming pending to its
	// read's issue.
	MaxWait time.Duration
	// CacheHits and CacheMisses count read-ahead slot lookups;
	// CacheHitBytes are the bytes served from hits. InflightJoins are
	// pieces that found their slot being read and joined that read.
	CacheHits, CacheMisses, CacheHitBytes int64
	InflightJoins                         int64
	// ReadAheadHolds counts the times read-ahead was held back because most
	// of what the cache evicted had never been used.
	ReadAheadHolds int64
	Index          IndexCacheStats
	// BuffersInUse is the share's count: in flight, queued to readers,
	// held by consumers, and cached.
	BuffersInUse int
}

// ErrClosed is returned by Register on a closed scheduler and by a
// reader's Poll after the scheduler closed under it.
var ErrClosed = errors.New("scheduler: closed")

// Scheduler is the read scheduler of one disk. All methods are safe for
// concurrent use.
type Scheduler struct {
	cfg       Config
	io        diskio.IO
	share     *mem.Share
	bufBytes  int
	slotMode  bool // read-ahead: reads cover whole slots
	maxBufs   int  // buffers per read at most
	now       func() time.Time
	cache     *slotCache
	index     *IndexCache
	done      chan *diskio.Request
	wake      chan struct{}
	quit      chan struct{}
	exited    chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	closed    bool
	paused    bool // tests: queue pieces without issuing them
	files     map[*diskio.File]*fileInfo
	nextBase  int64
	jobs      map[string]*job
	readers   map[*Reader]struct{}
	active    []*fileInfo // files with pending items (elevator)
	age       ageList
	pending   int
	head      int64 // the sweep's position
	sinceAged int   // reads since the last jump to an aged piece
	// Read-ahead usefulness: evictions and never-used evictions in the
	// current window, and reads left without read-ahead.
	raEvicted, raWasted, raHold int
	seq                         uint64
	reads                       []*read
	free                        []*read
	inflight                    int
	stash                       []*mem.Buf
	bufs                        []*readBuf // by pool buffer index
	// inflightSlots maps the slots being read (read-ahead mode) to their
	// buffers, so that a piece needing one joins its read.
	inflightSlots map[uint64]*readBuf
	toNotify      []*Reader         // owned by loop
	batch         []*diskio.Request // owned by loop
	trace         []TraceRead
	stats         Stats
	runBuf        []piece
}

type job struct {
	name    string
	readers int
	pending int
	held    atomic.Int64 // bytes in flight or queued or held by consumers
}

// piece is a part of a reader's extent that a read serves.
type piece struct {
	r        *Reader
	off, end int64
}

// read is one merged disk read in flight.
type read struct {
	id         int
	fi         *fileInfo
	start, end int64 // file range read
	claimedEnd int64 // end of the last byte a reader asked for
	firstEnd   int64 // end of the first buffer; the others are one buffer each
	reqs       []diskio.Request
	ptrs       []*diskio.Request
	bufs       []*readBuf
	readers    []*Reader
	pending    int
}

// New starts the scheduler of one disk.
func New(cfg Config) (*Scheduler, error) {
	if cfg.IO == nil || cfg.Buffers == nil {
		return nil, errors.New("scheduler: Config needs IO and Buffers")
	}
	if cfg.Policy > FIFO {
		return nil, fmt.Errorf("scheduler: unknown %v", cfg.Policy)
	}
	if cfg.MaxReadBytes == 0 {
		cfg.MaxReadBytes = DefaultMaxReadBytes
	}
	if cfg.MergeGapBytes == 0 {
		cfg.MergeGapBytes = DefaultMergeGapBytes
	} else if cfg.MergeGapBytes < 0 {
		cfg.MergeGapBytes = 0
	}
	if cfg.Depth == 0 {
		cfg.Depth = DefaultDepth
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.IndexCacheBytes == 0 {
		cfg.IndexCacheBytes = DefaultIndexCacheBytes
	}
	if cfg.MaxReadBytes < 0 || cfg.Depth < 0 || cfg.Deadline < 0 || cfg.ReadAheadBytes < 0 {
		return nil, fmt.Errorf("scheduler: negative MaxReadBytes, Depth, Deadline or ReadAheadBytes in %+v", cfg)
	}
	probe := cfg.Buffers.TryGet()
	if probe == nil {
		return nil, fmt.Errorf("scheduler: share %q has no free buffer to size reads by", cfg.Buffers.Name())
	}
	bufBytes := len(probe.Bytes())
	probe.Release()
	shareBytes := int64(cfg.Buffers.Limit()) * int64(bufBytes)
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = shareBytes / 2
	}
	if cfg.Policy == FIFO {
		cfg.CacheBytes = -1 // the baseline reads nothing ahead
	}
	if cfg.CacheBytes > 0 && cfg.CacheBytes < int64(bufBytes) {
		cfg.CacheBytes = -1 // not even one slot: no read-ahead
	}
	if cfg.CacheBytes > shareBytes/2 {
		return nil, fmt.Errorf("scheduler: read-ahead cache of %d bytes exceeds half the %d-byte share %q", cfg.CacheBytes, shareBytes, cfg.Buffers.Name())
	}
	s := &Scheduler{
		cfg:       cfg,
		io:        cfg.IO,
		share:     cfg.Buffers,
		bufBytes:  bufBytes,
		slotMode:  cfg.CacheBytes > 0,
		now:       cfg.Now,
		wake:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		exited:    make(chan struct{}),
		files:     make(map[*diskio.File]*fileInfo),
		nextBase:  1 << 60,
		jobs:      make(map[string]*job),
		readers:   make(map[*Reader]struct{}),
		head:      math.MinInt64,
		sinceAged: agingBatch,
	}
	if s.now == nil {
		s.now = time.Now
	}
	// A read spans at most MaxReadBytes: that many buffers, and one more in
	// read-ahead mode, where the first buffer ends at its slot's end.
	s.maxBufs = max((cfg.MaxReadBytes+bufBytes-1)/bufBytes, 1)
	if s.slotMode {
		s.maxBufs++
	}
	s.maxBufs = min(s.maxBufs, cfg.Buffers.Limit())
	s.done = make(chan *diskio.Request, cfg.Depth*s.maxBufs)
	for i := range cfg.Depth {
		rd := &read{
			id:   i,
			reqs: make([]diskio.Request, s.maxBufs),
			ptrs: make([]*diskio.Request, 0, s.maxBufs),
			bufs: make([]*readBuf, 0, s.maxBufs),
		}
		s.reads = append(s.reads, rd)
		s.free = append(s.free, rd)
	}
	s.stash = make([]*mem.Buf, 0, s.maxBufs)
	s.batch = make([]*diskio.Request, 0, s.maxBufs)
	var err error
	if s.slotMode {
		s.cache = newSlotCache(cfg.CacheBytes, bufBytes)
		s.inflightSlots = make(map[uint64]*readBuf)
	}
	if cfg.IndexCacheBytes > 0 {
		if s.index, err = NewIndexCache(cfg.IndexCacheBytes); err != nil {
			if s.cache != nil {
				s.cache.close()
			}
			return nil, err
		}
	}
	go s.loop()
	return s, nil
}

// IndexCache is the scheduler's cache of index blocks, for the engine's
// partition readers of this disk (nil when IndexCacheBytes < 0).
func (s *Scheduler) IndexCache() *IndexCache { return s.index }

// Policy is the scheduler's policy.
func (s *Scheduler) Policy() Policy { return s.cfg.Policy }

// ReadAhead reports whether the read-ahead cache is on.
func (s *Scheduler) ReadAhead() bool { return s.slotMode }

// Stats returns a snapshot of the counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	st := s.stats
	st.Readers = len(s.readers)
	st.Pending = s.pending
	st.InFlight = s.inflight
	s.mu.Unlock()
	if s.index != nil {
		st.Index = s.index.Stats()
	}
	st.BuffersInUse = s.share.InUse()
	return st
}

// Trace returns the reads issued so far, in issue order, when Config.Trace
// is set, and forgets them.
func (s *Scheduler) Trace() []TraceRead {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.trace
	s.trace = nil
	return t
}

// Close cancels every reader, waits for the reads in flight, empties the
// read-ahead cache and stops. Chunks handed out before stay valid until
// released.
func (s *Scheduler) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		rs := make([]*Reader, 0, len(s.readers))
		for r := range s.readers {
			rs = append(rs, r)
		}
		s.mu.Unlock()
		for _, r := range rs {
			r.stop(ErrClosed)
		}
		close(s.quit)
		<-s.exited
		if s.cache != nil {
			s.cache.close()
		}
		if s.index != nil {
			s.index.Close()
		}
	})
	return nil
}

// wakeup asks the loop to plan again (a buffer came back, credit arrived).
func (s *Scheduler) wakeup() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loop owns issuing and completing reads. Only it plans, so the batch of
// requests to submit and the readers to notify are its own, filled under mu
// and used after mu is released: neither Submit nor a reader's Notify runs
// under the lock.
func (s *Scheduler) loop() {
	defer close(s.exited)
	quit := s.quit
	quitting := false
	for {
		select {
		case req := <-s.done:
			s.mu.Lock()
			s.complete(req)
			for more := true; more; {
				select {
				case req := <-s.done:
					s.complete(req)
				default:
					more = false
				}
			}
		case <-s.wake:
			s.mu.Lock()
		case <-quit:
			quit = nil // a nil channel blocks: stop selecting it
			quitting = true
			s.mu.Lock()
		}
		if !quitting {
			s.plan()
		}
		idle := s.inflight == 0
		s.mu.Unlock()
		if len(s.batch) > 0 {
			s.submit(s.batch)
			clear(s.batch)
			s.batch = s.batch[:0]
		}
		for _, r := range s.toNotify {
			r.signal()
		}
		clear(s.toNotify)
		s.toNotify = s.toNotify[:0]
		if quitting && idle {
			return
		}
	}
}

// submit hands a batch of requests to the IO. A refused batch (the IO
// closed, a request unaligned) completes every request with the error, so
// the readers see it.
func (s *Scheduler) submit(batch []*diskio.Request) {
	if err := s.io.Submit(batch...); err != nil {
		for _, r := range batch {
			r.Err = err
			r.N = 0
			s.done <- r
		}
	}
}
