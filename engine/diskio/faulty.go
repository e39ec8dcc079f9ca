package diskio

import (
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Rule says which requests a Faulty IO disturbs and how. A request matches
// when its op and file match; the rule then skips its first After matches
// and disturbs the next Times ones (0: every one after that).
type Rule struct {
	Op   Op     // 0 matches every op
	Path string // a filepath.Match pattern on the file's base name; "" matches every file
	// Match, when set, must also accept the request.
	Match func(op Op, path string, off int64, n int) bool
	After int
	Times int

	Err   error         // complete with this error (syscall.EIO, syscall.ENOSPC) instead of doing the IO
	Short int           // write only the first Short bytes (rounded down to the file's alignment), then report a short write
	Delay time.Duration // pass the request on only after this delay
}

// Faulty wraps an IO and disturbs the requests that rules select: the
// fault-injection seam for engine tests, in the spirit of Pebble's errorfs.
type Faulty struct {
	inner IO

	mu      sync.Mutex
	rules   []*ruleState
	closing bool
	// delayed counts the requests a Delay rule holds back. Close waits for
	// them to reach the inner IO, so that, as the IO contract says, every
	// request has completed when Close returns.
	delayed sync.WaitGroup
}

type ruleState struct {
	Rule
	seen, hit int
}

var _ IO = (*Faulty)(nil)

// NewFaulty wraps inner.
func NewFaulty(inner IO) *Faulty { return &Faulty{inner: inner} }

// Inject adds a rule; the returned function removes it.
func (f *Faulty) Inject(r Rule) (remove func()) {
	s := &ruleState{Rule: r}
	f.mu.Lock()
	f.rules = append(f.rules, s)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, x := range f.rules {
			if x == s {
				f.rules = append(f.rules[:i], f.rules[i+1:]...)
				return
			}
		}
	}
}

// Hits reports, for each rule in the order they were injected, how many
// requests it has disturbed so far.
func (f *Faulty) Hits() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	hits := make([]int, len(f.rules))
	for i, s := range f.rules {
		hits[i] = s.hit
	}
	return hits
}

// pick returns the first rule that disturbs r, counting it.
func (f *Faulty) pick(r *Request) *Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.rules {
		if s.Op != 0 && s.Op != r.Op {
			continue
		}
		if s.Path != "" {
			if ok, _ := filepath.Match(s.Path, filepath.Base(r.File.path)); !ok {
				continue
			}
		}
		if s.Match != nil && !s.Match(r.Op, r.File.path, r.Off, len(r.Buf)) {
			continue
		}
		s.seen++
		if s.seen <= s.After || (s.Times > 0 && s.hit >= s.Times) {
			continue
		}
		s.hit++
		rule := s.Rule
		return &rule
	}
	return nil
}

func (f *Faulty) Submit(reqs ...*Request) error {
	for _, r := range reqs {
		if err := validate(r); err != nil {
			return err
		}
	}
	// Without rules the wrapper costs nothing, allocations included.
	f.mu.Lock()
	none := len(f.rules) == 0
	f.mu.Unlock()
	if none {
		return f.inner.Submit(reqs...)
	}
	pass := make([]*Request, 0, len(reqs))
	for _, r := range reqs {
		rule := f.pick(r)
		switch {
		case rule == nil:
			pass = append(pass, r)
		case rule.Err != nil:
			r.finish(0, rule.Err)
		case rule.Delay > 0 && f.hold():
			time.AfterFunc(rule.Delay, func() {
				defer f.delayed.Done()
				if err := f.inner.Submit(r); err != nil {
					r.finish(0, err)
				}
			})
		case rule.Short > 0 && r.Op == OpWrite && rule.Short < len(r.Buf):
			n := rule.Short - rule.Short%r.File.align.Offset
			r.restore = r.Buf
			r.Buf = r.Buf[:n]
			pass = append(pass, r)
		default:
			pass = append(pass, r)
		}
	}
	if len(pass) == 0 {
		return nil
	}
	return f.inner.Submit(pass...)
}

// hold counts a request that a Delay rule holds back, unless the IO is
// closing: then the request goes on at once (and completes with ErrClosed).
func (f *Faulty) hold() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.delayed.Add(1)
	return true
}

func (f *Faulty) OpenFile(path string, flag int, perm os.FileMode) (*File, error) {
	return f.inner.OpenFile(path, flag, perm)
}

func (f *Faulty) RegisterMemory(slab []byte, unit int) (bool, error) {
	return f.inner.RegisterMemory(slab, unit)
}

func (f *Faulty) Info() Info {
	i := f.inner.Info()
	i.Detail = "faulty; " + i.Detail
	return i
}

// Close waits for the requests held back by Delay rules to reach the inner
// IO, then closes it.
func (f *Faulty) Close() error {
	f.mu.Lock()
	f.closing = true
	f.mu.Unlock()
	f.delayed.Wait()
	return f.inner.Close()
}
