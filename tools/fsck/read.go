package fsck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"golang.org/x/sys/unix"
)

// ios is the IO fsck reads through: the one the backend flag asks for and,
// for backend auto, a buffered one made on first need for files whose
// filesystem refuses O_DIRECT (tmpfs).
//
// fsck does not let diskio.New probe O_DIRECT the way the engine does: the
// probe creates a file in the directory, and fsck must work on a disk
// mounted read-only. Opening each file with O_DIRECT is the probe instead.
type ios struct {
	primary  diskio.IO
	own      bool // primary is ours to close
	fallback bool // may fall back to buffered IO
	depth    int
	log      *slog.Logger

	mu       sync.Mutex
	buffered diskio.IO
	noted    map[uint64]bool // filesystems (st_dev) already logged as read buffered
}

func newIOs(opts *Options, depth int) (*ios, error) {
	s := &ios{depth: depth, log: opts.Log, noted: make(map[uint64]bool)}
	backend := opts.Backend
	if backend == "" {
		backend = diskio.BackendAuto
	}
	if opts.IO != nil {
		s.primary = opts.IO
		s.fallback = backend == diskio.BackendAuto && opts.IO.Info().Direct
		return s, nil
	}
	io, err := diskio.New(diskio.Config{Backend: backend, Depth: depth, Log: opts.Log})
	if err != nil {
		return nil, err
	}
	s.primary, s.own = io, true
	s.fallback = backend == diskio.BackendAuto && io.Info().Direct
	return s, nil
}

// open opens path for reading and returns the IO to read it with.
func (s *ios) open(path string) (*diskio.File, diskio.IO, error) {
	f, err := s.primary.OpenFile(path, os.O_RDONLY, 0)
	if err == nil || !s.fallback || !errors.Is(err, unix.EINVAL) {
		return f, s.primary, err
	}
	// open(2) with O_DIRECT fails with EINVAL where the filesystem does
	// not support it.
	b, err := s.bufferedIO(path)
	if err != nil {
		return nil, nil, err
	}
	f, err = b.OpenFile(path, os.O_RDONLY, 0)
	return f, b, err
}

func (s *ios) bufferedIO(path string) (diskio.IO, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buffered == nil {
		b, err := diskio.New(diskio.Config{Backend: diskio.BackendBuffered, Depth: s.depth, Log: s.log})
		if err != nil {
			return nil, err
		}
		s.buffered = b
	}
	// One line per filesystem.
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil && !s.noted[st.Dev] && s.log != nil {
		s.noted[st.Dev] = true
		s.log.Warn("fsck: O_DIRECT refused by the filesystem; reading its files through the page cache", "dir", filepath.Dir(path))
	}
	return s.buffered, nil
}

func (s *ios) info() diskio.Info { return s.primary.Info() }

func (s *ios) close() error {
	var err error
	if s.own {
		err = s.primary.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buffered != nil {
		err = errors.Join(err, s.buffered.Close())
	}
	return err
}

// reader streams whole files through the IO seam in large sequential reads,
// several in flight, so that the disk is busy with the next reads while the
// CPU checks the current one. One reader verifies one file at a time; fsck
// runs one reader per job.
type reader struct {
	ios   *ios
	chunk int64
	bufs  []*mem.Buf
	reqs  []diskio.Request
	ready []bool
	done  chan *diskio.Request
	batch []*diskio.Request
}

func newReader(s *ios, pool *mem.Pool, depth int) *reader {
	r := &reader{
		ios:   s,
		chunk: int64(pool.BufferBytes()),
		reqs:  make([]diskio.Request, depth),
		ready: make([]bool, depth),
		done:  make(chan *diskio.Request, depth),
		batch: make([]*diskio.Request, 0, depth),
	}
	for range depth {
		b := pool.TryGet()
		if b == nil {
			panic("fsck: the pool has fewer buffers than the readers need")
		}
		r.bufs = append(r.bufs, b)
	}
	return r
}

func (r *reader) release() {
	for _, b := range r.bufs {
		b.Release()
	}
	r.bufs = nil
}

// ioError marks an error of reading (opening, a failed or short read) as
// opposed to a verdict on the bytes.
type ioError struct{ err error }

func (e *ioError) Error() string { return e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// stream reads the file at path from its first byte to its size at open, in
// order, and hands every chunk to sink; it stops at the first error of the
// sink, which it returns as is. Errors of reading are *ioError. progress, if
// set, is told of every byte handed over.
func (r *reader) stream(ctx context.Context, path string, sink func([]byte) error, progress func(int64)) (size int64, err error) {
	f, io, err := r.ios.open(path)
	if err != nil {
		return 0, &ioError{err}
	}
	inflight := 0
	defer func() {
		// Every request must be back before the file closes and its buffer
		// is reused.
		for ; inflight > 0; inflight-- {
			<-r.done
		}
		if cerr := f.Close(); cerr != nil && err == nil {
			err = &ioError{cerr}
		}
	}()
	if size, err = f.Size(); err != nil {
		return 0, &ioError{err}
	}
	if !f.Direct() {
		// Through the page cache: ask for the largest readahead
		// (posix_fadvise(2) SEQUENTIAL doubles the window).
		if err := unix.Fadvise(f.Fd(), 0, 0, unix.FADV_SEQUENTIAL); err != nil {
			return 0, &ioError{fmt.Errorf("fadvise %s: %w", path, err)}
		}
	}
	depth := int64(len(r.reqs))
	chunks := (size + r.chunk - 1) / r.chunk
	// issue queues the reads of chunks [from, to) in one Submit.
	issue := func(from, to int64) error {
		r.batch = r.batch[:0]
		for k := from; k < to; k++ {
			slot := k % depth
			q := &r.reqs[slot]
			*q = diskio.Request{Op: diskio.OpRead, File: f, Buf: r.bufs[slot].Bytes(), Off: k * r.chunk, Done: r.done, Tag: uint64(slot)}
			r.ready[slot] = false
			r.batch = append(r.batch, q)
		}
		if err := io.Submit(r.batch...); err != nil {
			return &ioError{err}
		}
		inflight += len(r.batch)
		return nil
	}
	if err := issue(0, min(depth, chunks)); err != nil {
		return size, err
	}
	for k := int64(0); k < chunks; k++ {
		slot := k % depth
		for !r.ready[slot] {
			q := <-r.done
			inflight--
			r.ready[q.Tag] = true
		}
		q := &r.reqs[slot]
		want := min(r.chunk, size-k*r.chunk)
		switch {
		case q.Err != nil:
			return size, &ioError{q.Err}
		case int64(q.N) < want:
			return size, &ioError{fmt.Errorf("read %s [%d, +%d): got %d bytes: the file shrank while fsck read it", path, q.Off, want, q.N)}
		}
		if err := sink(q.Buf[:want]); err != nil {
			return size, err
		}
		if !f.Direct() {
			// Verified bytes are not needed again: leave the page cache
			// to the worker's data rather than fill it with fsck's.
			if err := unix.Fadvise(f.Fd(), q.Off, want, unix.FADV_DONTNEED); err != nil {
				return size, &ioError{fmt.Errorf("fadvise %s: %w", path, err)}
			}
		}
		if progress != nil {
			progress(want)
		}
		if err := ctx.Err(); err != nil {
			return size, &ioError{err}
		}
		if next := k + depth; next < chunks {
			if err := issue(next, next+1); err != nil {
				return size, err
			}
		}
	}
	return size, nil
}

// readAll reads a small file (a disk's IDENTITY or COMMITLOG) whole, through
// the seam like everything else, up to limit bytes.
func (r *reader) readAll(ctx context.Context, path string, limit int64) ([]byte, error) {
	var b []byte
	_, err := r.stream(ctx, path, func(p []byte) error {
		if int64(len(b)+len(p)) > limit {
			return &ioError{fmt.Errorf("%s is larger than %d bytes", path, limit)}
		}
		b = append(b, p...)
		return nil
	}, nil)
	return b, err
}
