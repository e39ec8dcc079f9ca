// Package progress draws a one-line progress bar on a terminal for the
// sluice commands that run long (fsck, demo): work done of the total, the
// rate so far and the time left, rewritten in place.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// progressInterval is how often the bar is redrawn.
const progressInterval = 250 * time.Millisecond

// Bar is a one-line progress bar (bytes done of the total, rate, ETA) on a
// terminal, rewritten in place. Lines printed meanwhile go through Pause,
// which clears the bar first so that lines do not mix. A nil *Bar does
// nothing but still runs Pause's function.
type Bar struct {
	w      io.Writer
	label  string
	total  atomic.Int64
	bytes  atomic.Int64
	began  time.Time
	mu     sync.Mutex
	shown  bool
	stop   chan struct{}
	exited chan struct{}
}

// New returns a bar drawn on w with a label, or nil (no bar) when w is nil.
func New(w io.Writer, label string) *Bar {
	if w == nil {
		return nil
	}
	return &Bar{w: w, label: label}
}

// Terminal returns f when it is a terminal, else nil: the writer to give
// New so that a bar is drawn only where someone watches.
func Terminal(f *os.File) io.Writer {
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return nil
	}
	return f
}

// Add adds n to the total.
func (p *Bar) Add(n int64) {
	if p != nil {
		p.total.Add(n)
	}
}

// Done counts n more done.
func (p *Bar) Done(n int64) {
	if p != nil && n > 0 {
		p.bytes.Add(n)
	}
}

// Start draws the bar every quarter second until Finish.
func (p *Bar) Start() {
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

// Finish stops the bar and clears its line.
func (p *Bar) Finish() {
	if p == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.exited
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}

// Pause runs fn (which prints) with the bar cleared, and draws the bar
// again below what fn printed.
func (p *Bar) Pause(fn func()) {
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

func (p *Bar) clearLocked() {
	if p.shown {
		// Carriage return, then erase to the end of the line (ECMA-48 EL).
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

func (p *Bar) drawLocked() {
	fmt.Fprint(p.w, "\r\x1b[K"+Line(p.label, p.bytes.Load(), p.total.Load(), time.Since(p.began)))
	p.shown = true
}

// Line renders the bar: label, done of total bytes, the rate so far, and
// the time left at that rate.
func Line(label string, done, total int64, elapsed time.Duration) string {
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
	return fmt.Sprintf("%s [%s] %3.0f%% %s / %s  %s/s  ETA %s", label, bar, 100*frac, Size(done), Size(total), Size(int64(rate)), eta)
}

// Size prints a byte count in binary units.
func Size(n int64) string {
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
