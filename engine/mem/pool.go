// Package mem is the worker's aligned memory: one mmap'd slab per process,
// cut into fixed-size buffers, handed out by a pool with exact accounting.
//
// Every byte of shuffle data a worker holds lives in this slab: write
// buffers of the engine, read buffers of the scheduler, receive buffers of
// the network service. The slab is page aligned (mmap), so every buffer is
// aligned for O_DIRECT as long as the buffer size is a multiple of the disk's
// DIO alignment, which New checks. The slab can be registered with io_uring
// as fixed buffers (engine/diskio does it when RLIMIT_MEMLOCK or
// CAP_IPC_LOCK allows).
//
// The pool never allocates more memory: when it is exhausted, Get waits (in
// FIFO order) until a buffer is released or its context ends, and TryGet
// returns nil. This is the base of every back-pressure mechanism in Sluice.
// Shares put a sub-limit on part of the pool (a disk's write buffers, the
// scheduler's read budget, one connection's receive buffers) so that one
// consumer cannot take everything.
package mem

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Get on a closed pool.
var ErrClosed = errors.New("mem: pool closed")

// Config sizes a pool.
type Config struct {
	BufferBytes int // size of every buffer; a multiple of Align
	Buffers     int // number of buffers
	// Align is the alignment every buffer must satisfy (the disks' DIO
	// memory and offset alignment); zero means the page size. Buffers are
	// always page aligned when BufferBytes is a multiple of the page size.
	Align int
}

// Buf is one buffer of the pool. Its memory stays valid until the pool is
// closed; after Release the holder must not touch it again.
type Buf struct {
	data  []byte
	index int32
	inUse bool // guarded by Pool.mu
	pool  *Pool
	share *Share
}

// Bytes is the whole buffer, BufferBytes long.
func (b *Buf) Bytes() []byte { return b.data }

// Index is the buffer's position in the slab, stable for the pool's life.
func (b *Buf) Index() int { return int(b.index) }

// Release returns the buffer to the pool (and its share). Releasing a
// buffer twice is a programming error and panics.
func (b *Buf) Release() { b.pool.put(b) }

// Stats is an exact snapshot of the pool's accounting.
type Stats struct {
	Buffers     int // total
	BufferBytes int
	InUse       int
	Free        int
	Waiters     int // goroutines blocked in Get
}

// Pool hands out the buffers of one slab.
type Pool struct {
	slab        []byte
	bufferBytes int
	bufs        []Buf

	mu      sync.Mutex
	free    []int32 // stack of free buffer indexes
	waiters []*waiter
	closed  bool
}

type waiter struct {
	share *Share
	ready chan *Buf // capacity 1: the buffer handed over, or nil when closed
}

// New maps the slab and builds the pool.
func New(cfg Config) (*Pool, error) {
	page := os.Getpagesize()
	align := cfg.Align
	if align == 0 {
		align = page
	}
	switch {
	case cfg.BufferBytes <= 0 || cfg.Buffers <= 0:
		return nil, fmt.Errorf("mem: need positive buffer size and count, have %d × %d", cfg.Buffers, cfg.BufferBytes)
	case align&(align-1) != 0:
		return nil, fmt.Errorf("mem: alignment %d is not a power of two", align)
	case cfg.BufferBytes%align != 0:
		return nil, fmt.Errorf("mem: buffer size %d is not a multiple of the DIO alignment %d", cfg.BufferBytes, align)
	case align > page && cfg.BufferBytes%page != 0:
		return nil, fmt.Errorf("mem: alignment %d exceeds the page size; buffer size %d must then be a multiple of it", align, cfg.BufferBytes)
	case cfg.Buffers > 1<<31-1:
		return nil, fmt.Errorf("mem: %d buffers is too many", cfg.Buffers)
	}
	size := cfg.BufferBytes * cfg.Buffers
	if size/cfg.Buffers != cfg.BufferBytes {
		return nil, fmt.Errorf("mem: %d × %d bytes overflows", cfg.Buffers, cfg.BufferBytes)
	}
	// Anonymous private memory, not populated: pages are faulted in on first
	// use, or pinned all at once if the slab is registered with io_uring.
	slab, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mem: mmap %d bytes for %d buffers: %w", size, cfg.Buffers, err)
	}
	if uintptr(unsafe.Pointer(&slab[0]))%uintptr(align) != 0 {
		return nil, errors.Join(fmt.Errorf("mem: slab not %d-aligned", align), unix.Munmap(slab))
	}
	p := &Pool{
		slab:        slab,
		bufferBytes: cfg.BufferBytes,
		bufs:        make([]Buf, cfg.Buffers),
		free:        make([]int32, cfg.Buffers),
	}
	for i := range p.bufs {
		off := i * cfg.BufferBytes
		p.bufs[i] = Buf{data: slab[off : off+cfg.BufferBytes : off+cfg.BufferBytes], index: int32(i), pool: p}
		// Hand out low indexes first: a lightly used pool touches few pages.
		p.free[cfg.Buffers-1-i] = int32(i)
	}
	return p, nil
}

// Memory is the whole slab, for registration with io_uring.
func (p *Pool) Memory() []byte { return p.slab }

// BufferBytes is the size of every buffer.
func (p *Pool) BufferBytes() int { return p.bufferBytes }

// Stats returns the pool's accounting.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		Buffers:     len(p.bufs),
		BufferBytes: p.bufferBytes,
		InUse:       len(p.bufs) - len(p.free),
		Free:        len(p.free),
		Waiters:     len(p.waiters),
	}
}

// TryGet returns a free buffer, or nil when none is free.
func (p *Pool) TryGet() *Buf { return p.tryGet(nil) }

// Get returns a free buffer, waiting in FIFO order for one to be released.
// It fails when ctx ends or the pool closes; it never allocates memory
// beyond the slab.
func (p *Pool) Get(ctx context.Context) (*Buf, error) { return p.get(ctx, nil) }

func (p *Pool) tryGet(s *Share) *Buf {
	p.mu.Lock()
	defer p.mu.Unlock()
	// No queued waiter is overtaken here: whenever buffers are freed they go
	// to eligible waiters first (handOffLocked), so a free buffer means every
	// waiter is blocked by its share's limit, not by the pool.
	if p.closed || !s.hasRoom() {
		return nil
	}
	return p.takeLocked(s)
}

func (p *Pool) get(ctx context.Context, s *Share) (*Buf, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if s.hasRoom() {
		if b := p.takeLocked(s); b != nil {
			p.mu.Unlock()
			return b, nil
		}
	}
	w := &waiter{share: s, ready: make(chan *Buf, 1)}
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()

	select {
	case b := <-w.ready:
		if b == nil {
			return nil, ErrClosed
		}
		return b, nil
	case <-ctx.Done():
		p.mu.Lock()
		removed := p.removeWaiterLocked(w)
		p.mu.Unlock()
		if !removed {
			// The buffer was handed over while ctx ended: give it back.
			if b := <-w.ready; b != nil {
				b.Release()
			}
		}
		return nil, fmt.Errorf("mem: waiting for a buffer: %w", ctx.Err())
	}
}

func (p *Pool) takeLocked(s *Share) *Buf {
	n := len(p.free)
	if n == 0 {
		return nil
	}
	b := &p.bufs[p.free[n-1]]
	p.free = p.free[:n-1]
	if b.inUse {
		panic(fmt.Sprintf("mem: free list holds buffer %d that is in use", b.index))
	}
	b.inUse = true
	b.share = s
	if s != nil {
		s.inUse++
	}
	return b
}

func (p *Pool) removeWaiterLocked(w *waiter) bool {
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return true
		}
	}
	return false
}

func (p *Pool) put(b *Buf) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !b.inUse {
		panic(fmt.Sprintf("mem: buffer %d released twice", b.index))
	}
	b.inUse = false
	if b.share != nil {
		b.share.inUse--
		b.share = nil
	}
	p.free = append(p.free, b.index)
	p.handOffLocked()
}

// handOffLocked gives free buffers to waiters, oldest first, skipping
// waiters whose share is at its limit (they wait for their share to drain
// and must not block others).
func (p *Pool) handOffLocked() {
	for i := 0; i < len(p.waiters) && len(p.free) > 0; {
		w := p.waiters[i]
		if !w.share.hasRoom() {
			i++
			continue
		}
		p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
		w.ready <- p.takeLocked(w.share)
	}
}

// Close wakes every waiter with ErrClosed and unmaps the slab. It fails,
// leaving the pool usable, while buffers are still in use: unmapping memory
// that a disk or socket may still write into would be a use-after-free.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if inUse := len(p.bufs) - len(p.free); inUse > 0 {
		return fmt.Errorf("mem: close with %d buffers still in use", inUse)
	}
	p.closed = true
	for _, w := range p.waiters {
		w.ready <- nil
	}
	p.waiters = nil
	if err := unix.Munmap(p.slab); err != nil {
		return fmt.Errorf("mem: munmap slab: %w", err)
	}
	return nil
}

// Share limits how many buffers one consumer may hold at once. Its buffers
// come from the pool; a Share only adds the limit and its own accounting.
type Share struct {
	pool  *Pool
	name  string
	limit int
	inUse int // guarded by pool.mu
}

// NewShare creates a share of at most limit buffers.
func (p *Pool) NewShare(name string, limit int) *Share {
	if limit <= 0 {
		panic(fmt.Sprintf("mem: share %q with limit %d", name, limit))
	}
	return &Share{pool: p, name: name, limit: limit}
}

func (s *Share) hasRoom() bool { return s == nil || s.inUse < s.limit }

// TryGet returns a buffer if both the share and the pool have one.
func (s *Share) TryGet() *Buf { return s.pool.tryGet(s) }

// Get waits for a buffer within the share's limit.
func (s *Share) Get(ctx context.Context) (*Buf, error) { return s.pool.get(ctx, s) }

// InUse is the number of the share's buffers currently held.
func (s *Share) InUse() int {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	return s.inUse
}

// Limit is the share's maximum.
func (s *Share) Limit() int { return s.limit }

// Name is the share's name, for metrics and errors.
func (s *Share) Name() string { return s.name }
