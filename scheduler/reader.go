package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// Extent is a byte range of an open file that a reader wants: the
// engine's extent, as its partition readers resolve them (Region is not
// used here). A reader's extents are served in the order given, each one's
// bytes in order.
type Extent = engine.Extent

// VerifyFunc checks a chunk's bytes before the reader hands it out. It is
// called once per chunk, in order, on the goroutine that calls Poll or Next,
// so it may keep state across the chunks of one reader (a buffer header or
// payload may be split between two chunks; see BufferVerifier). An error
// fails the reader: Poll returns it and every later call returns it too.
type VerifyFunc func(c Chunk) error

// ReaderConfig describes a reader.
type ReaderConfig struct {
	// Job names the application the reader serves; the budget is shared
	// fairly among jobs.
	Job string
	// Extents are what the reader reads, in order. The files must stay
	// open until the reader has ended (Poll returned io.EOF or an error, or
	// Cancel returned) and its chunks are released. Reads still in flight
	// then complete on the right file: a diskio.File closed under them keeps
	// its descriptor until they are done.
	Extents []Extent
	// Verify, if set, checks every chunk before it is handed out.
	Verify VerifyFunc
	// Notify, if set, is called whenever Poll may have something new to
	// return (a chunk became ready, the reader ended or failed). It runs on
	// the scheduler's goroutine or inside AddCredit, must not block and must
	// not call back into the scheduler; calls may be spurious. Without it,
	// wait on Ready or use Next.
	Notify func()
}

// Chunk is part of an extent, read into a pool buffer. Data stays valid
// until Release; several chunks may share one buffer, which returns to the
// pool when the last of them is released. Release chunks as soon as their
// bytes are sent, never only once more chunks arrive: consumers that hold
// chunks while waiting for the next ones can take the whole budget and wait
// for each other forever.
type Chunk struct {
	Data   []byte
	Extent int   // index of the extent in the reader's list
	Offset int64 // offset of Data within the extent
	Last   bool  // Data ends the extent

	rb     *readBuf
	gen    uint32
	bufEnd int // end of Data within the buffer
	job    *job
}

// Release returns the chunk's share of its buffer. Releasing a zero Chunk,
// or the same Chunk value twice, does nothing.
func (c *Chunk) Release() {
	if c.rb == nil {
		return
	}
	c.job.held.Add(-int64(len(c.Data)))
	c.rb.release()
	c.rb = nil
}

// Errors of Poll.
var (
	// ErrPending: nothing to hand out yet. Wait for Notify or Ready.
	ErrPending = errors.New("scheduler: no chunk ready")
	// ErrCanceled: the reader was cancelled.
	ErrCanceled = errors.New("scheduler: reader canceled")
)

// Reader is one consumer's stream of extents from one disk.
type Reader struct {
	s       *Scheduler
	job     *job
	extents []Extent
	files   []*fileInfo // per extent
	verify  VerifyFunc
	notify  func()
	ready   chan struct{}

	// Guarded by s.mu.
	it        item
	credit    int64
	ext       int   // the extent being issued
	extOff    int64 // bytes of it issued
	issuedAll bool
	stopped   bool
	attached  bool // counted in s.readers, its job and its files

	mu       sync.Mutex
	q        []Chunk // chunks queued, in order; q[qhead:] are live
	qhead    int
	finished bool  // every extent issued
	err      error // the reader ended with this error
	eof      bool
}

// Register adds a reader. It reads nothing until it gets credit.
func (s *Scheduler) Register(cfg ReaderConfig) (*Reader, error) {
	r := &Reader{
		s:       s,
		extents: make([]Extent, 0, len(cfg.Extents)),
		verify:  cfg.Verify,
		notify:  cfg.Notify,
		ready:   make(chan struct{}, 1),
	}
	r.it.r = r
	for _, e := range cfg.Extents {
		if e.File == nil || e.Offset < 0 || e.Length < 0 {
			return nil, fmt.Errorf("scheduler: bad extent %+v", e)
		}
		if e.Length > 0 {
			r.extents = append(r.extents, e)
		}
	}
	r.files = make([]*fileInfo, len(r.extents))
	for i, e := range r.extents {
		fi, err := s.fileInfo(e.File)
		if err != nil {
			s.dropFiles(r.files[:i])
			return nil, err
		}
		r.files[i] = fi
		if e.Offset+e.Length > fi.size {
			s.dropFiles(r.files[:i+1])
			return nil, fmt.Errorf("scheduler: extent [%d, +%d) of %s ends past its %d bytes", e.Offset, e.Length, e.File.Name(), fi.size)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.dropFilesLocked(r.files)
		return nil, ErrClosed
	}
	j := s.jobs[cfg.Job]
	if j == nil {
		j = &job{name: cfg.Job}
		s.jobs[cfg.Job] = j
	}
	j.readers++
	r.job = j
	r.attached = true
	s.readers[r] = struct{}{}
	if len(r.extents) == 0 {
		s.issuedAllLocked(r)
	}
	return r, nil
}

// fileInfo returns the scheduler's record of f, with a reference taken,
// creating it (fstat and FIEMAP, outside the lock) on first use.
func (s *Scheduler) fileInfo(f *diskio.File) (*fileInfo, error) {
	s.mu.Lock()
	if fi := s.files[f]; fi != nil {
		fi.refs++
		s.mu.Unlock()
		return fi, nil
	}
	s.mu.Unlock()
	key, size, err := KeyOf(f)
	if err != nil {
		return nil, err
	}
	align := int64(1)
	if f.Direct() {
		align = int64(f.Alignment().Offset)
	}
	fi := &fileInfo{f: f, key: key, khash: key.hash(), size: size, align: align}
	fi.q.listed = -1
	if !s.cfg.NoFiemap {
		phys, err := Fiemap(f, size)
		switch {
		case err == nil:
			fi.phys = phys
		case !errors.Is(err, ErrNoFiemap):
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if other := s.files[f]; other != nil {
		other.refs++
		return other, nil
	}
	if fi.phys == nil {
		fi.base = s.nextBase
		// Files without a map lie 1 GiB apart at least, beyond any device.
		s.nextBase += alignUp(size, 1<<30) + 1<<30
	}
	fi.refs = 1
	s.files[f] = fi
	return fi, nil
}

func (s *Scheduler) dropFiles(fis []*fileInfo) {
	s.mu.Lock()
	s.dropFilesLocked(fis)
	s.mu.Unlock()
}

func (s *Scheduler) dropFilesLocked(fis []*fileInfo) {
	for _, fi := range fis {
		fi.refs--
		if fi.refs == 0 && s.files[fi.f] == fi {
			delete(s.files, fi.f)
		}
	}
}

// detachLocked takes a reader out of the scheduler: its pending piece, its
// job's and its files' counts.
func (s *Scheduler) detachLocked(r *Reader) {
	s.unqueue(&r.it)
	if !r.attached {
		return
	}
	r.attached = false
	delete(s.readers, r)
	r.job.readers--
	s.dropFilesLocked(r.files)
}

// AddCredit allows the scheduler to read n more bytes for the reader. The
// consumer grants credit as it frees receive buffers: bytes, not buffers,
// since chunks have any length (a chunk never exceeds the credit that was
// left when its read was issued). Until it has credit, a reader holds no
// buffer and takes no part in scheduling. Grant in steps of at least a
// buffer's worth (64 KiB or more): every grant of credit can cost a disk
// read of its own.
func (r *Reader) AddCredit(n int64) {
	if n <= 0 {
		return
	}
	s := r.s
	s.mu.Lock()
	if r.stopped || r.issuedAll {
		s.mu.Unlock()
		return
	}
	r.credit += n
	hit := false
	if r.it.queued {
		// The pending piece grows with the credit, up to its extent's end.
		e := &r.extents[r.ext]
		r.it.end = min(e.Offset+e.Length, r.it.off+r.credit)
	} else {
		hit = s.activateLocked(r, false)
	}
	s.mu.Unlock()
	if hit {
		r.signal()
	}
	s.wakeup()
}

// activateLocked gives a reader with credit its next piece: from the
// read-ahead cache while the slots it needs are there, then as a pending
// item. It reports whether it queued chunks or ended the reader; inLoop says
// the caller is the loop, which then notifies the reader itself.
func (s *Scheduler) activateLocked(r *Reader, inLoop bool) bool {
	news := false
	for r.credit > 0 && !r.issuedAll {
		e := &r.extents[r.ext]
		fi := r.files[r.ext]
		off := e.Offset + r.extOff
		end := min(e.Offset+e.Length, off+r.credit)
		if s.cache != nil {
			if rb := s.inflightSlot(fi, off); rb != nil {
				// The bytes are being read: the chunk joins that read.
				stop := min(end, rb.off+int64(rb.want))
				s.stats.InflightJoins++
				s.stats.DeliveredBytes += stop - off
				rb.ref()
				rb.used.Store(true)
				r.push(rb, off-rb.off, stop-rb.off)
				rb.rd.readers = append(rb.rd.readers, r) // notified when it completes
				continue
			}
			if ent, ok := s.cache.get(fi.khash, off/int64(s.bufBytes)); ok {
				if off >= ent.from && off < ent.from+int64(ent.n) {
					stop := min(end, ent.from+int64(ent.n))
					s.stats.CacheHits++
					s.stats.CacheHitBytes += stop - off
					s.stats.DeliveredBytes += stop - off
					ent.rb.used.Store(true)
					r.push(ent.rb, off-ent.from, stop-ent.from) // the chunk owns get's reference
					news = true
					continue
				}
				ent.rb.release()
			}
			s.stats.CacheMisses++
		}
		r.it.fi, r.it.off, r.it.end = fi, off, end
		s.queue(&r.it)
		break
	}
	if r.issuedAll {
		news = true
	}
	if news && inLoop {
		s.toNotify = append(s.toNotify, r)
	}
	return news
}

// push queues the chunk of rb's bytes [from, to) as the reader's next bytes
// and advances the reader past them. The caller has taken the chunk's
// reference on rb.
func (r *Reader) push(rb *readBuf, from, to int64) {
	n := to - from
	c := Chunk{
		Data:   rb.buf.Bytes()[from:to:to],
		Extent: r.ext,
		Offset: r.extOff,
		Last:   r.extOff+n == r.extents[r.ext].Length,
		rb:     rb,
		gen:    rb.gen(),
		bufEnd: int(to),
		job:    r.job,
	}
	r.job.held.Add(n)
	r.credit -= n
	r.extOff += n
	if c.Last {
		r.ext++
		r.extOff = 0
	}
	r.mu.Lock()
	if r.qhead > 0 && len(r.q) == cap(r.q) {
		m := copy(r.q, r.q[r.qhead:])
		clear(r.q[m:])
		r.q, r.qhead = r.q[:m], 0
	}
	r.q = append(r.q, c)
	r.mu.Unlock()
	if r.ext == len(r.extents) {
		r.s.issuedAllLocked(r)
	}
}

// issuedAllLocked records that every extent of r has been issued.
func (s *Scheduler) issuedAllLocked(r *Reader) {
	r.issuedAll = true
	r.mu.Lock()
	r.finished = true
	r.mu.Unlock()
}

// signal wakes whoever waits on the reader.
func (r *Reader) signal() {
	select {
	case r.ready <- struct{}{}:
	default:
	}
	if r.notify != nil {
		r.notify()
	}
}

// Ready receives a value whenever Poll may have something new to return.
func (r *Reader) Ready() <-chan struct{} { return r.ready }

// Poll returns the reader's next chunk without waiting: ErrPending when
// none is ready yet, io.EOF after the last one, or the error that ended the
// reader (a failed read, a failed verification, ErrCanceled, ErrClosed).
// The caller must Release every chunk it gets. Poll and Next must not be
// called concurrently on one reader.
func (r *Reader) Poll() (Chunk, error) {
	r.mu.Lock()
	if r.err != nil {
		err := r.err
		r.mu.Unlock()
		return Chunk{}, err
	}
	if r.qhead == len(r.q) {
		if !r.finished {
			r.mu.Unlock()
			return Chunk{}, ErrPending
		}
		first := !r.eof
		r.eof = true
		r.mu.Unlock()
		if first {
			r.s.mu.Lock()
			r.s.detachLocked(r)
			r.s.mu.Unlock()
		}
		return Chunk{}, io.EOF
	}
	c := &r.q[r.qhead]
	if !c.rb.ready(c.gen) {
		r.mu.Unlock()
		return Chunk{}, ErrPending
	}
	if err := c.rb.err; err != nil || c.bufEnd > c.rb.n {
		r.mu.Unlock()
		return Chunk{}, r.fail(r.readError(c))
	}
	out := *c
	*c = Chunk{}
	r.qhead++
	if r.qhead == len(r.q) {
		r.q, r.qhead = r.q[:0], 0
	}
	r.mu.Unlock()
	if r.verify != nil {
		if err := r.verify(out); err != nil {
			out.Release()
			return Chunk{}, r.fail(err)
		}
	}
	return out, nil
}

// readError describes why c's read did not give its bytes.
func (r *Reader) readError(c *Chunk) error {
	e := r.extents[c.Extent]
	if c.rb.err != nil {
		return fmt.Errorf("scheduler: reading extent %d [%d, +%d) of %s: %w", c.Extent, e.Offset, e.Length, e.File.Name(), c.rb.err)
	}
	return fmt.Errorf("scheduler: extent %d [%d, +%d) of %s: the file ends at %d: %w",
		c.Extent, e.Offset, e.Length, e.File.Name(), c.rb.off+int64(c.rb.n), io.ErrUnexpectedEOF)
}

// Next waits for the reader's next chunk; see Poll.
func (r *Reader) Next(ctx context.Context) (Chunk, error) {
	for {
		c, err := r.Poll()
		if err != ErrPending {
			return c, err
		}
		select {
		case <-r.ready:
		case <-ctx.Done():
			return Chunk{}, ctx.Err()
		}
	}
}

// fail ends the reader with err (kept if it already ended) and returns the
// error it ended with.
func (r *Reader) fail(err error) error {
	r.stop(err)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Cancel ends the reader: nothing more is read for it, and the chunks
// queued to it are released at once (a buffer still being read into goes
// back to the pool when its read completes). Chunks already handed out stay
// valid until released. Cancel after the end does nothing.
func (r *Reader) Cancel() { r.stop(ErrCanceled) }

// stop ends the reader with err unless it already ended.
func (r *Reader) stop(err error) {
	s := r.s
	s.mu.Lock()
	r.stopped = true
	s.detachLocked(r)
	s.mu.Unlock()
	r.mu.Lock()
	if r.err == nil && !r.eof {
		r.err = err
	}
	for i := r.qhead; i < len(r.q); i++ {
		r.q[i].Release()
	}
	clear(r.q)
	r.q, r.qhead = r.q[:0], 0
	r.mu.Unlock()
	r.signal()
}
