package transport

import (
	"context"
	"sync"
)

// Pool keeps one connection per worker address for a client process: every
// channel to a worker travels over it. A connection that failed is replaced
// by the next Get.
type Pool struct {
	cfg Config

	mu     sync.Mutex
	conns  map[string]*poolEntry
	closed bool
}

type poolEntry struct {
	c     *Conn
	ready chan struct{} // closed when the dial finished
	err   error
}

// NewPool returns a pool dialing with cfg.
func NewPool(cfg Config) *Pool {
	return &Pool{cfg: cfg, conns: map[string]*poolEntry{}}
}

// Get returns the connection to addr, dialing it if there is none or the
// last one failed. Concurrent callers share one dial.
func (p *Pool) Get(ctx context.Context, addr string) (*Conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, &ConnError{Addr: addr, Err: context.Canceled}
		}
		e := p.conns[addr]
		if e == nil {
			e = &poolEntry{ready: make(chan struct{})}
			p.conns[addr] = e
			p.mu.Unlock()
			e.c, e.err = Dial(ctx, addr, p.cfg)
			close(e.ready)
			if e.err != nil {
				p.mu.Lock()
				if p.conns[addr] == e {
					delete(p.conns, addr)
				}
				p.mu.Unlock()
				return nil, e.err
			}
			return e.c, nil
		}
		p.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err != nil {
			return nil, e.err
		}
		if e.c.Err() == nil {
			return e.c, nil
		}
		// Failed since: replace it.
		p.mu.Lock()
		if p.conns[addr] == e {
			delete(p.conns, addr)
		}
		p.mu.Unlock()
	}
}

// Close closes every connection.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*poolEntry{}
	p.mu.Unlock()
	for _, e := range conns {
		<-e.ready
		if e.c != nil {
			e.c.Close()
		}
	}
	return nil
}

// Conns returns the live connections (for stats and tests).
func (p *Pool) Conns() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Conn
	for _, e := range p.conns {
		select {
		case <-e.ready:
			if e.c != nil && e.c.Err() == nil {
				out = append(out, e.c)
			}
		default:
		}
	}
	return out
}
