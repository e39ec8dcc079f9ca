package agent

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/procfs/blockdevice"
	"golang.org/x/sys/unix"
)

// Device identifies a block device (or partition) by its numbers.
type Device struct{ Major, Minor uint32 }

func (d Device) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// DeviceOf returns the device holding the file system of path (its
// st_dev). Overlay and other virtual file systems have no device in
// /proc/diskstats; Utilization then reports nothing for them.
func DeviceOf(path string) (Device, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Device{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return Device{Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)}, nil
}

// DiskUtilization turns the io_ticks counter of /proc/diskstats (read
// with github.com/prometheus/procfs: milliseconds during which the device
// had I/O in flight) into the fraction of time each device was busy between
// two samples — DiskStatus.utilization. The worker samples it once per
// heartbeat.
type DiskUtilization struct {
	fs  blockdevice.FS
	now func() time.Time

	mu   sync.Mutex
	last map[Device]tickSample
}

type tickSample struct {
	ticks uint64
	at    time.Time
}

// NewDiskUtilization reads diskstats under procRoot and sysRoot ("" for
// /proc and /sys).
func NewDiskUtilization(procRoot, sysRoot string) (*DiskUtilization, error) {
	fs, err := blockdevice.NewFS(procRoot, sysRoot)
	if err != nil {
		return nil, fmt.Errorf("diskstats: %w", err)
	}
	return &DiskUtilization{fs: fs, now: time.Now, last: map[Device]tickSample{}}, nil
}

// Sample returns each device's busy fraction (0..1) since the previous
// Sample. Devices seen for the first time are left out.
func (u *DiskUtilization) Sample() (map[Device]float64, error) {
	stats, err := u.fs.ProcDiskstats()
	if err != nil {
		return nil, fmt.Errorf("read diskstats: %w", err)
	}
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[Device]float64, len(stats))
	for _, s := range stats {
		dev := Device{s.MajorNumber, s.MinorNumber}
		prev, ok := u.last[dev]
		u.last[dev] = tickSample{ticks: s.IOsTotalTicks, at: now}
		if !ok || s.IOsTotalTicks < prev.ticks {
			continue // first sight, or the counter wrapped or was reset
		}
		elapsed := now.Sub(prev.at).Milliseconds()
		if elapsed <= 0 {
			continue
		}
		out[dev] = min(float64(s.IOsTotalTicks-prev.ticks)/float64(elapsed), 1)
	}
	return out, nil
}
