package diskio

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// poolIO is the portable backend: depth goroutines doing pread(2),
// pwrite(2) and fdatasync(2). Each blocked syscall holds an OS thread, which
// is what the Go runtime does for blocking file IO anyway.
type poolIO struct {
	direct bool
	depth  int
	queue  chan *Request

	// mu orders Submit against Close: Submit sends with the read lock held,
	// so Close (write lock) can close the queue only when no send is under
	// way.
	mu      sync.RWMutex
	closed  bool
	workers sync.WaitGroup
	// completing counts workers running a completion. A Complete function
	// may Submit, and must not wait for a full queue that only the workers
	// drain (all of them may be completing): while one runs, a request
	// that finds the queue full is handed to a goroutine of its own.
	completing atomic.Int32
	late       sync.WaitGroup
}

var _ IO = (*poolIO)(nil)

func newPool(depth int, direct bool) *poolIO {
	p := &poolIO{direct: direct, depth: depth, queue: make(chan *Request, depth)}
	p.workers.Add(depth)
	for range depth {
		go p.work()
	}
	return p
}

func (p *poolIO) work() {
	defer p.workers.Done()
	for r := range p.queue {
		n, err := syncIO(r)
		p.completing.Add(1)
		r.finish(n, err)
		p.completing.Add(-1)
	}
}

// syncIO performs one request with plain syscalls, retrying EINTR and
// continuing short transfers the way the io_uring backend's single SQE does
// not need to: pread/pwrite may return early on a signal.
func syncIO(r *Request) (int, error) {
	fd := r.File.fd
	switch r.Op {
	case OpSync:
		for {
			err := unix.Fdatasync(fd)
			if !errors.Is(err, unix.EINTR) {
				return 0, err
			}
		}
	case OpRead:
		done := 0
		for done < len(r.Buf) {
			n, err := unix.Pread(fd, r.Buf[done:], r.Off+int64(done))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return done, err
			}
			if n == 0 {
				break // end of file
			}
			done += n
			if r.File.direct && done%r.File.align.Offset != 0 {
				break // a direct read ends short only at end of file
			}
		}
		return done, nil
	case OpWrite:
		done := 0
		for done < len(r.Buf) {
			n, err := unix.Pwrite(fd, r.Buf[done:], r.Off+int64(done))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return done, err
			}
			if n == 0 {
				break
			}
			done += n
		}
		return done, nil
	}
	return 0, unix.EINVAL
}

func (p *poolIO) OpenFile(path string, flag int, perm os.FileMode) (*File, error) {
	return openFile(path, flag, perm, p.direct)
}

func (p *poolIO) Submit(reqs ...*Request) error {
	for _, r := range reqs {
		if err := validate(r); err != nil {
			return err
		}
	}
	var rejected []*Request
	p.mu.RLock()
	for i, r := range reqs {
		if p.closed {
			rejected = reqs[i:]
			break
		}
		select {
		case p.queue <- r:
		default:
			if p.completing.Load() > 0 {
				p.late.Add(1)
				go p.queueLate(r)
			} else {
				p.queue <- r
			}
		}
	}
	p.mu.RUnlock()
	// Outside the lock: a Complete function may Submit again.
	for _, r := range rejected {
		r.finish(0, ErrClosed)
	}
	return nil
}

// queueLate queues r once the queue has room, or fails it when the IO
// closed meanwhile.
func (p *poolIO) queueLate(r *Request) {
	defer p.late.Done()
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		r.finish(0, ErrClosed)
		return
	}
	p.queue <- r
	p.mu.RUnlock()
}

func (p *poolIO) RegisterMemory([]byte, int) (bool, error) { return false, nil }

func (p *poolIO) Info() Info {
	return Info{Backend: "pool", Direct: p.direct, Depth: p.depth}
}

func (p *poolIO) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.queue)
	p.mu.Unlock()
	p.workers.Wait()
	p.late.Wait() // those still waiting found the IO closed
	return nil
}
