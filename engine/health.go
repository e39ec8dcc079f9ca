package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/procfs/blockdevice"
	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// health watches one disk: a probe through the IO seam (write, read back,
// fdatasync a small file) with a timeout, and IO-hang detection from
// /proc/diskstats.
type health struct {
	d     *Disk
	buf   []byte
	probe uint64
	hang  hangDetector
	fs    *blockdevice.FS
}

func newHealth(d *Disk) *health {
	h := &health{d: d, hang: hangDetector{timeout: d.cfg.HangTimeout}}
	a := max(d.align.Offset, d.align.Memory, 512)
	h.buf = alignedBytes(2*a, a)
	if d.dev.Name != "" {
		if fs, err := blockdevice.NewFS(d.cfg.ProcRoot, d.cfg.SysRoot); err == nil {
			h.fs = &fs
		}
	}
	return h
}

// ErrHung says a disk stopped completing IO.
var ErrHung = errors.New("engine: disk IO hung")

func (s *Store) healthLoop() {
	defer close(s.healthDone)
	t := time.NewTicker(s.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-s.healthStop:
			return
		case <-t.C:
			s.CheckHealth(context.Background())
		}
	}
}

// CheckHealth runs one round of health checks on every disk that is not
// failed: free space (a full disk with space above its reserve again takes
// partitions), the probe, and hang detection. The store runs it every
// Config.HealthInterval; tests call it directly.
func (s *Store) CheckHealth(ctx context.Context) {
	for _, d := range s.disks {
		if d.State() == DiskFailed || d.health == nil || d.closed.Load() {
			continue
		}
		d.refreshSpace()
		if err := d.health.check(ctx); err != nil {
			d.markFailed(err)
		}
	}
}

// check runs the probe and the hang detector once.
func (h *health) check(ctx context.Context) error {
	d := h.d
	if h.fs != nil {
		if stats, err := h.fs.ProcDiskstats(); err == nil {
			for _, st := range stats {
				if st.MajorNumber == d.dev.Major && st.MinorNumber == d.dev.Minor {
					if h.hang.observe(time.Now(), st.IOStats) {
						d.stats.hangs.Add(1)
						return fmt.Errorf("%w: %s has had %d requests in flight and completed none for %v (/proc/diskstats)",
							ErrHung, st.DeviceName, st.IOsInProgress, h.hang.timeout)
					}
					break
				}
			}
		}
	}
	d.stats.probes.Add(1)
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ProbeTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.runProbe() }()
	select {
	case err := <-done:
		if err != nil {
			d.stats.probeFailures.Add(1)
			switch classify(err) {
			case faultFull:
				d.markFull(err)
				return nil
			case faultFailed:
				return err
			}
			d.log.Warn("engine: health probe failed", "err", err)
		}
		return nil
	case <-ctx.Done():
		d.stats.probeFailures.Add(1)
		d.stats.hangs.Add(1)
		return fmt.Errorf("%w: the health probe of %s did not complete within %v", ErrHung, d.path, d.cfg.ProbeTimeout)
	}
}

// runProbe writes one block with a fresh pattern through the IO, reads it
// back, compares, fdatasyncs, and removes the file.
func (h *health) runProbe() (err error) {
	d := h.d
	path := filepath.Join(d.path, probeFile)
	f, err := d.io.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, f.Close())
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}()
	n := len(h.buf) / 2
	out, in := h.buf[:n], h.buf[n:]
	h.probe++
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(out[i:], h.probe*0x9e3779b97f4a7c15+uint64(i))
	}
	if err := diskio.Do(d.io, &diskio.Request{Op: diskio.OpWrite, File: f, Buf: out, Off: 0}); err != nil {
		return err
	}
	r := &diskio.Request{Op: diskio.OpRead, File: f, Buf: in, Off: 0}
	if err := diskio.Do(d.io, r); err != nil {
		return err
	}
	if r.N != n || string(in) != string(out) {
		return fmt.Errorf("%w: the health probe read back different bytes", ErrDiskFailed)
	}
	return diskio.Do(d.io, &diskio.Request{Op: diskio.OpSync, File: f})
}

// hangDetector says a device hangs when it has had requests in flight and
// completed none for longer than timeout.
//
// The brief had it watch io_ticks; but since Linux 5.x reading
// /proc/diskstats itself advances io_ticks of a device with requests in
// flight (diskstats_show calls update_io_ticks), so a hung device's io_ticks
// moves exactly as fast as we look at it. The completion counters (reads,
// writes, discards, flushes) do not move without a completion.
type hangDetector struct {
	timeout  time.Duration
	last     uint64
	progress time.Time // when completions last moved, or requests appeared in flight
	seen     bool
	idle     bool // nothing was in flight at the last observation
}

func (h *hangDetector) observe(now time.Time, st blockdevice.IOStats) bool {
	done := st.ReadIOs + st.WriteIOs + st.DiscardIOs + st.FlushRequestsCompleted
	busy := st.IOsInProgress > 0
	if !h.seen || done != h.last || !busy || h.idle {
		h.seen, h.last, h.progress, h.idle = true, done, now, !busy
		return false
	}
	return now.Sub(h.progress) > h.timeout
}
