package bench

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-shuffle/sluice/engine"
	"golang.org/x/sys/unix"
)

// A timeline samples a write phase of the engine benchmark every interval
// and writes one line per sample: what the engine did (bytes written, bytes
// accepted and not yet written, writes handed to its IO), what the device
// under the directory saw (/sys/dev/block/MAJ:MIN/stat: bytes written, mean
// request size, cache flushes, bytes discarded, and the share of the time
// it had requests in flight), and the process's CPU use (100 % is one
// CPU). It shows where a phase's time goes: a disk waiting for writes,
// writes waiting for the disk, or the CPU. A last line covers the time
// since the last sample.
type timeline struct {
	w        io.Writer
	phase    string
	s        *engine.Store
	devStat  string // "" when the directory has no block device
	start    time.Time
	stop     chan struct{}
	done     chan struct{}
	last     timelineSample
	interval time.Duration
}

type timelineSample struct {
	at           time.Time
	engineBytes  int64
	pending      int64 // accepted by the engine, not yet written
	inIO         int   // writes queued for the IO or in it
	cpu          time.Duration
	dev          [17]int64 // the device's stat fields (Documentation/block/stat.rst)
	devAvailable bool
}

const timelineInterval = 100 * time.Millisecond

// startTimeline samples s every interval until the returned function is
// called; nil w means no timeline.
func startTimeline(w io.Writer, phase string, s *engine.Store, dir string, interval time.Duration) (stop func()) {
	if w == nil {
		return func() {}
	}
	t := &timeline{w: w, phase: phase, s: s, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err == nil && unix.Major(st.Dev) != 0 {
		t.devStat = fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(st.Dev), unix.Minor(st.Dev))
	}
	t.start = time.Now()
	t.last = t.sample()
	go t.run()
	return func() {
		close(t.stop)
		<-t.done
	}
}

func (t *timeline) run() {
	defer close(t.done)
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			t.line()
			return
		case <-tick.C:
			t.line()
		}
	}
}

func (t *timeline) sample() timelineSample {
	x := timelineSample{at: time.Now()}
	for _, d := range t.s.Stats().Disks {
		x.engineBytes += d.BytesWritten
		x.pending += d.PendingBytes
		x.inIO += d.WritesInIO + d.WritesQueued
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		x.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if t.devStat != "" {
		if b, err := os.ReadFile(t.devStat); err == nil {
			for i, f := range strings.Fields(string(b)) {
				if i == len(x.dev) {
					break
				}
				x.dev[i], _ = strconv.ParseInt(f, 10, 64)
			}
			x.devAvailable = true
		}
	}
	return x
}

// The fields of /sys/dev/block/MAJ:MIN/stat the timeline reads.
const (
	statWrites         = 4
	statWriteSectors   = 6
	statBusyMs         = 9 // io_ticks: milliseconds with requests in flight
	statDiscardSectors = 13
	statFlushes        = 15
)

func (t *timeline) line() {
	x := t.sample()
	secs := x.at.Sub(t.last.at).Seconds()
	if secs <= 0 {
		return
	}
	mb := func(b int64) float64 { return float64(b) / 1e6 }
	fmt.Fprintf(t.w, "timeline %-6s %6.2fs  engine %5.0f MB/s  total %6.0f MB  pending %5.0f MB  writes in IO %4d",
		t.phase, x.at.Sub(t.start).Seconds(), mb(x.engineBytes-t.last.engineBytes)/secs, mb(x.engineBytes), mb(x.pending), x.inIO)
	if x.devAvailable && t.last.devAvailable {
		reqs := x.dev[statWrites] - t.last.dev[statWrites]
		bytes := (x.dev[statWriteSectors] - t.last.dev[statWriteSectors]) * 512
		meanKiB := 0.0
		if reqs > 0 {
			meanKiB = float64(bytes) / float64(reqs) / 1024
		}
		fmt.Fprintf(t.w, " | device %5.0f MB/s  mean request %4.0f KiB  flushes %3d  discards %5.0f MB  busy %3.0f%%",
			mb(bytes)/secs, meanKiB, x.dev[statFlushes]-t.last.dev[statFlushes],
			mb((x.dev[statDiscardSectors]-t.last.dev[statDiscardSectors])*512),
			float64(x.dev[statBusyMs]-t.last.dev[statBusyMs])/10/secs)
	}
	fmt.Fprintf(t.w, " | cpu %3.0f%%\n", 100*(x.cpu-t.last.cpu).Seconds()/secs)
	t.last = x
}
