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

	// mu orders Submit against Close without being held while a send
	// waits for room (a worker's Complete function may Submit, and must
	// not queue behind a Close that waits for that very send): Submit
	// counts its send in sending, and Close, once closed is set, waits for
	// the sends under way before it closes the queue.
	mu      sync.Mutex
	sent    sync.Cond // sending dropped to 0
	closed  bool
	sending int
	workers sync.WaitGroup
	// completing counts workers running a completion. A Complete function
	// may Submit, and must not wait for a full queue that only the workers
	// drain (all of them may be completing): while one runs, a request
	// that finds the queue full is sent by a goroutine of its own.
	completing atomic.Int32
}

var _ IO = (*poolIO)(nil)

func newPool(depth int, direct bool) *poolIO {
	p := &poolIO{direct: direct, depth: depth, queue: make(chan *Request, depth)}
	p.sent.L = &p.mu
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
	if err := holdFiles(reqs); err != nil {
		return err
	}
	for i, r := range reqs {
		if !p.send(r) {
			for _, r := range reqs[i:] {
				r.finish(0, ErrClosed)
			}
			break
		}
	}
	return nil
}

// send queues r for the workers, waiting for room unless a completion is
// running (then a goroutine waits instead); false if the IO is closed.
func (p *poolIO) send(r *Request) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.sending++
	p.mu.Unlock()
	select {
	case p.queue <- r:
	default:
		if p.completing.Load() > 0 {
			go func() {
				p.queue <- r
				p.sendDone()
			}()
			return true
		}
		p.queue <- r
	}
	p.sendDone()
	return true
}

func (p *poolIO) sendDone() {
	p.mu.Lock()
	p.sending--
	if p.sending == 0 {
		p.sent.Broadcast()
	}
	p.mu.Unlock()
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
	// The workers still take from the queue: the sends under way end.
	for p.sending > 0 {
		p.sent.Wait()
	}
	close(p.queue)
	p.mu.Unlock()
	p.workers.Wait()
	return nil
}
