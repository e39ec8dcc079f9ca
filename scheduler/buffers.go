package scheduler

import (
	"fmt"
	"sync/atomic"

	"github.com/sluice-shuffle/sluice/engine/mem"
)

// readBuf is one pool buffer that a disk read fills. Every chunk cut from
// it, the read itself while it is in flight, and a read-ahead cache entry
// each hold one reference; the last release returns the pool buffer to the
// scheduler's share at once, from whichever goroutine drops it.
//
// state packs a generation (high 32 bits) and the reference count (low 32
// bits). The generation changes whenever the buffer goes back to the pool,
// so a stale pointer (a cache entry read just as it was evicted) can never
// take a reference on the buffer's next use: acquire checks both halves in
// one compare-and-swap. There is one readBuf per pool buffer index, made
// once and reused, so the steady state allocates nothing.
type readBuf struct {
	state atomic.Uint64
	// filled is the generation whose read has completed; n and err are
	// written before it is stored and read only after it was loaded.
	filled atomic.Uint32
	n      int   // bytes the read transferred
	err    error // the read's error, or nil
	want   int   // bytes the read asked for
	rd     *read // the read in flight, while it is (guarded by Scheduler.mu)
	// used says a reader took bytes of it from the read-ahead cache or by
	// joining its read: an evicted entry that was never used was wasted.
	used atomic.Bool

	buf *mem.Buf
	off int64 // file offset of the buffer's first byte
	fi  *fileInfo
	s   *Scheduler
}

const refMask = 1<<32 - 1

func (rb *readBuf) gen() uint32 { return uint32(rb.state.Load() >> 32) }

// reset starts a new use of the buffer with one reference (the read's).
func (rb *readBuf) reset(b *mem.Buf, fi *fileInfo, off int64) {
	st := rb.state.Load()
	if st&refMask != 0 {
		panic(fmt.Sprintf("scheduler: read buffer %d reused with %d references", b.Index(), st&refMask))
	}
	rb.buf, rb.fi, rb.off, rb.n, rb.err = b, fi, off, 0, nil
	rb.used.Store(false)
	rb.state.Store(st&^refMask | 1)
}

// ref adds a reference for a holder that already has one.
func (rb *readBuf) ref() { rb.state.Add(1) }

// acquire takes a reference if the buffer is still in generation gen.
func (rb *readBuf) acquire(gen uint32) bool {
	for {
		st := rb.state.Load()
		if uint32(st>>32) != gen || st&refMask == 0 {
			return false
		}
		if rb.state.CompareAndSwap(st, st+1) {
			return true
		}
	}
}

// release drops a reference; the last one returns the pool buffer.
func (rb *readBuf) release() {
	for {
		st := rb.state.Load()
		refs := st & refMask
		if refs == 0 {
			panic("scheduler: read buffer released more often than referenced")
		}
		if refs > 1 {
			if rb.state.CompareAndSwap(st, st-1) {
				return
			}
			continue
		}
		b := rb.buf
		if rb.state.CompareAndSwap(st, (st>>32+1)<<32) {
			b.Release()
			rb.s.wakeup()
			return
		}
	}
}

// ready reports whether the read of generation gen has completed.
func (rb *readBuf) ready(gen uint32) bool { return rb.filled.Load() == gen }
