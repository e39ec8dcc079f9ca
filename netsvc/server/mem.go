package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sluice-shuffle/sluice/engine/mem"
)

// memBudget is a connection's memory (HELLO_ACK's memory bytes): the write
// and push credit it has outstanding, the bodies it holds staged, and the
// read data it has asked the schedulers for and not yet sent. The server
// controls all three, so the client cannot exceed it: a grant that does not
// fit waits until memory is released.
type memBudget struct {
	c     *conn
	limit int64

	mu      sync.Mutex
	used    int64
	waiters []*channel  // write and push channels waiting to be granted credit
	readers []*readChan // read channels waiting to ask for data
	closed  bool
}

func (m *memBudget) init(c *conn, limit int64) {
	m.c, m.limit = c, limit
}

// take takes up to want bytes, at least need (need ≤ 0: any amount), and
// returns what it took: 0 when even need does not fit.
func (m *memBudget) take(want, need int64) int64 {
	if want <= 0 {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	free := m.limit - m.used
	n := min(want, free)
	if n <= 0 || n < need {
		return 0
	}
	m.used += n
	m.c.s.st.memHeld.Add(n)
	return n
}

// release gives n bytes back and wakes waiters.
func (m *memBudget) release(n int64) {
	if n == 0 {
		return
	}
	m.mu.Lock()
	m.used -= n
	if m.used < 0 {
		panic(fmt.Sprintf("server: connection memory released below zero (%d)", m.used))
	}
	m.c.s.st.memHeld.Add(-n)
	var ws []*channel
	var rs []*readChan
	if !m.closed && (len(m.waiters) > 0 || len(m.readers) > 0) && m.limit-m.used >= minReadGrant {
		ws, m.waiters = m.waiters, nil
		rs, m.readers = m.readers, nil
	}
	m.mu.Unlock()
	for _, ch := range ws {
		ch.mu.Lock()
		if !ch.ended {
			ch.enqueueLocked(op{kind: opGrant})
		}
		ch.mu.Unlock()
	}
	for _, rc := range rs {
		rc.memWaiting.Store(false)
		m.c.out.markReady(rc)
	}
}

// wait queues a write or push channel for a grant when memory frees.
func (m *memBudget) wait(ch *channel) {
	m.mu.Lock()
	m.waiters = append(m.waiters, ch)
	m.mu.Unlock()
}

// waitRead queues a read channel to be pumped when memory frees.
func (m *memBudget) waitRead(rc *readChan) {
	if rc.memWaiting.Swap(true) {
		return
	}
	m.mu.Lock()
	m.readers = append(m.readers, rc)
	m.mu.Unlock()
}

func (m *memBudget) close() {
	m.mu.Lock()
	m.closed = true
	m.waiters, m.readers = nil, nil
	m.mu.Unlock()
}

// staging holds the bodies the engine could not take without waiting,
// until the channel's worker hands them over: pool buffers of the
// connection's share, carved in order (a bump allocator; a buffer goes back
// to the pool when its last body is released). A body larger than a pool
// buffer takes heap memory, bounded by the credit it came under.
type staging struct {
	c        *conn
	share    *mem.Share
	bufBytes int

	cur  *stageBuf // carved by the read loop only
	off  int
	mu   sync.Mutex
	free []*stageBuf
}

type stageBuf struct {
	b    *mem.Buf
	refs atomic.Int32
}

func (s *staging) init(c *conn, pool *mem.Pool, buffers int) {
	s.c = c
	s.share = pool.NewShare("staging "+c.nc.RemoteAddr().String(), buffers)
	s.bufBytes = pool.BufferBytes()
}

// alloc returns n bytes of staging memory (read loop only).
func (s *staging) alloc(ctx context.Context, n int) ([]byte, *stageBuf, error) {
	if n > s.bufBytes {
		return make([]byte, n), nil, nil
	}
	if s.cur == nil || s.bufBytes-s.off < n {
		if s.cur != nil {
			s.drop(s.cur)
			s.cur = nil
		}
		b := s.share.TryGet()
		if b == nil {
			var err error
			if b, err = s.share.Get(ctx); err != nil {
				return nil, nil, fmt.Errorf("server: waiting for staging memory: %w", err)
			}
		}
		s.c.s.st.stagingInUse.Add(1)
		s.mu.Lock()
		var sb *stageBuf
		if k := len(s.free); k > 0 {
			sb, s.free = s.free[k-1], s.free[:k-1]
		} else {
			sb = new(stageBuf)
		}
		s.mu.Unlock()
		sb.b = b
		sb.refs.Store(1) // the allocator's own reference
		s.cur, s.off = sb, 0
	}
	sb := s.cur
	sb.refs.Add(1)
	p := sb.b.Bytes()[s.off : s.off+n : s.off+n]
	s.off += n
	return p, sb, nil
}

// release returns a body's staging memory.
func (s *staging) release(sb *stageBuf, n int) {
	if sb != nil {
		s.drop(sb)
	}
}

func (s *staging) drop(sb *stageBuf) {
	if sb.refs.Add(-1) != 0 {
		return
	}
	sb.b.Release()
	sb.b = nil
	s.c.s.st.stagingInUse.Add(-1)
	s.mu.Lock()
	s.free = append(s.free, sb)
	s.mu.Unlock()
}

// close drops the allocator's reference (the read loop has ended).
func (s *staging) close() {
	if s.cur != nil {
		s.drop(s.cur)
		s.cur = nil
	}
}
