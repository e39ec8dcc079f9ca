package engine

import (
	"sync"

	"golang.org/x/sys/unix"
)

// eventQueue delivers events to Config.OnEvent from one goroutine, in the
// order they were emitted, so that the goroutine emitting (an IO's, a
// committer, a writer) never waits for the receiver. Events are rare (per
// partition, not per buffer), so the queue is an unbounded slice.
type eventQueue struct {
	fn      func(Event)
	mu      sync.Mutex
	cond    sync.Cond
	q       []Event
	closed  bool
	emitted int64
	dropped int64
	done    chan struct{}
}

func newEventQueue(fn func(Event)) *eventQueue {
	e := &eventQueue{fn: fn, done: make(chan struct{})}
	e.cond.L = &e.mu
	if fn == nil {
		close(e.done)
		return e
	}
	go e.run()
	return e
}

func (e *eventQueue) push(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fn == nil || e.closed {
		e.dropped++
		return
	}
	e.q = append(e.q, ev)
	e.emitted++
	e.cond.Signal()
}

func (e *eventQueue) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		for len(e.q) == 0 && !e.closed {
			e.cond.Wait()
		}
		if len(e.q) == 0 {
			e.mu.Unlock()
			return
		}
		batch := e.q
		e.q = nil
		e.mu.Unlock()
		for _, ev := range batch {
			e.fn(ev)
		}
	}
}

// close delivers what is queued and stops.
func (e *eventQueue) close() {
	e.mu.Lock()
	e.closed = true
	e.cond.Broadcast()
	e.mu.Unlock()
	<-e.done
}

func (e *eventQueue) counts() (emitted, dropped int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.emitted, e.dropped
}

func closeFD(fd int) error { return unix.Close(fd) }
