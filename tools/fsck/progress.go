package fsck

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progressInterval is how often the bar is redrawn.
const progressInterval = 250 * time.Millisecond

// progress draws a one-line progress bar (bytes verified of the total, rate,
// ETA) on a terminal, rewriting it in place. Results printed meanwhile go
// through pause, which clears the bar first so that lines do not mix. A nil
// *progress does nothing but still runs pause's function.
type progress struct {
	w      io.Writer
	total  atomic.Int64
	bytes  atomic.Int64
	began  time.Time
	mu     sync.Mutex
	shown  bool
	stop   chan struct{}
	exited chan struct{}
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w}
}

func (p *progress) add(n int64) {
	if p != nil {
		p.total.Add(n)
	}
}

func (p *progress) done(n int64) {
	if p != nil && n > 0 {
		p.bytes.Add(n)
	}
}

func (p *progress) start() {
	if p == nil {
		return
	}
	p.began = time.Now()
	p.stop, p.exited = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.exited)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				p.drawLocked()
				p.mu.Unlock()
			}
		}
	}()
}

// finish stops the bar and clears its line.
func (p *progress) finish() {
	if p == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.exited
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}

// pause runs fn (which prints) with the bar cleared, and draws the bar
// again below what fn printed.
func (p *progress) pause(fn func()) {
	if p == nil {
		fn()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	shown := p.shown
	p.clearLocked()
	fn()
	if shown {
		p.drawLocked()
	}
}

func (p *progress) clearLocked() {
	if p.shown {
		// Carriage return, then erase to the end of the line (ECMA-48 EL).
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

func (p *progress) drawLocked() {
	fmt.Fprint(p.w, "\r\x1b[K"+progressLine(p.bytes.Load(), p.total.Load(), time.Since(p.began)))
	p.shown = true
}

// progressLine renders the bar: done of total bytes, the rate so far, and
// the time left at that rate.
func progressLine(done, total int64, elapsed time.Duration) string {
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		switch {
		case i < filled:
			bar[i] = '='
		case i == filled:
			bar[i] = '>'
		default:
			bar[i] = ' '
		}
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	eta := "--"
	if rate > 0 && total >= done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("fsck [%s] %3.0f%% %s / %s  %s/s  ETA %s", bar, 100*frac, sizeText(done), sizeText(total), sizeText(int64(rate)), eta)
}

// sizeText prints a byte count in binary units.
func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i])
}
