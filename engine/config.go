package engine

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
)

// DirConfig is one data directory of the worker: one Disk.
type DirConfig struct {
	Path string
	// Type overrides the device type detected from sysfs (DiskUnknown:
	// detect).
	Type DiskType
}

// ParseDir parses a directory as configuration spells it: a path with an
// optional type tag in front, "[ssd]/data/1" or "[HDD]/data/2" or "/data/3".
func ParseDir(s string) (DirConfig, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") {
		if s == "" {
			return DirConfig{}, fmt.Errorf("engine: empty data directory")
		}
		return DirConfig{Path: s}, nil
	}
	tag, path, ok := strings.Cut(s[1:], "]")
	if !ok || path == "" {
		return DirConfig{}, fmt.Errorf("engine: data directory %q: want [ssd]/path, [hdd]/path or /path", s)
	}
	t, err := ParseDiskType(tag)
	if err != nil || t == DiskUnknown {
		return DirConfig{}, fmt.Errorf("engine: data directory %q: type tag %q is not ssd or hdd", s, tag)
	}
	return DirConfig{Path: path, Type: t}, nil
}

// Config opens a Store.
type Config struct {
	// Dirs are the data directories, one per disk. They are created when
	// missing.
	Dirs []DirConfig

	// Backend and Depth choose each disk's IO (diskio.Config); "" is
	// auto, and Depth defaults to 96 requests in flight (see writesInIO).
	Backend string
	Depth   int

	// Pool is the worker's buffer pool, shared with the read scheduler and
	// the network service. When nil the store makes one of PoolBytes in
	// buffers of BufferBytes, and closes it on Close.
	Pool        *mem.Pool
	PoolBytes   int64 // default 256 MiB
	BufferBytes int   // default 1 MiB; a multiple of every disk's DIO alignment

	// WriteBytesPerDisk bounds the pool memory one disk's writers hold
	// (its mem.Share). Default: half the pool split evenly over the disks.
	WriteBytesPerDisk int64
	// WriteDepth bounds the writes one partition has queued or in flight;
	// default 16.
	WriteDepth int
	// SpareBuffers is how many empty buffers a writer keeps ready beyond the
	// one it fills, so that Available (the network's credit) covers more
	// than the current buffer; default 1.
	SpareBuffers int

	// ReducePreallocBytes is how much a new ReducePartition file is
	// preallocated for when its ReduceSpec has no size hint (default 8 MiB;
	// truncated to the real length at finalize). Preallocating later costs
	// more: fallocate waits for the file's writes in flight.
	ReducePreallocBytes int64

	// ReserveBytes is the free space below which a disk takes no new
	// partitions. Zero means the default, 1 GiB or 5% of the disk's
	// capacity, whichever is smaller; negative means no reserve.
	ReserveBytes int64
	// Placement chooses the disk of a new partition; nil is DefaultPlacement.
	Placement Placement

	// Quarantine moves uncommitted leftovers found at start-up to
	// <disk>/quarantine/ instead of deleting them. They are never served.
	Quarantine bool

	// HealthInterval is the period of the health probe and the space check
	// (default 5s; negative disables the goroutine, for tests that call
	// CheckHealth themselves). ProbeTimeout bounds one probe (default 10s);
	// HangTimeout is how long /proc/diskstats may show requests in flight
	// without progress before the disk is declared hung (default 30s).
	HealthInterval time.Duration
	ProbeTimeout   time.Duration
	HangTimeout    time.Duration

	// DeleteFilesPerSecond and DeleteBytesPerSecond rate-limit the deletion
	// of released datasets per disk (defaults 2,000 files/s and 1 GiB/s), so
	// that it does not starve foreground IO.
	DeleteFilesPerSecond float64
	DeleteBytesPerSecond float64

	// OnEvent receives every Event, from engine goroutines; it must not
	// block for long (the worker wiring queues them for the manager). The
	// events of one disk arrive in order.
	OnEvent func(Event)

	// Log receives the engine's few log lines; nil is slog.Default().
	Log *slog.Logger

	// WrapIO, when set, wraps each disk's IOs: the fault-injection seam for
	// tests (diskio.NewFaulty). It is called with the disk's directory for
	// the IO of the partition files, and with <dir>/COMMITLOG for the
	// commit log's own IO.
	WrapIO func(dir string, io diskio.IO) diskio.IO

	// ProcRoot and SysRoot locate /proc and /sys (tests); "" means the real
	// ones.
	ProcRoot, SysRoot string
}

const (
	defaultPoolBytes      = 256 << 20
	defaultBufferBytes    = 1 << 20
	defaultDepth          = 96
	defaultWriteDepth     = 16
	defaultReducePrealloc = 8 << 20
	defaultSpareBuffers   = 1
	defaultReserveBytes   = 1 << 30
	defaultHealthEvery    = 5 * time.Second
	defaultProbeTimeout   = 10 * time.Second
	defaultHangTimeout    = 30 * time.Second
	defaultDeleteFiles    = 2000
	defaultDeleteBytes    = 1 << 30
)

func (c *Config) withDefaults() Config {
	o := *c
	if o.PoolBytes == 0 {
		o.PoolBytes = defaultPoolBytes
	}
	if o.BufferBytes == 0 {
		o.BufferBytes = defaultBufferBytes
	}
	if o.Pool != nil {
		o.BufferBytes = o.Pool.BufferBytes()
	}
	if o.ReducePreallocBytes <= 0 {
		o.ReducePreallocBytes = defaultReducePrealloc
	}
	if o.Depth <= 0 {
		o.Depth = defaultDepth
	}
	if o.WriteDepth <= 0 {
		o.WriteDepth = defaultWriteDepth
	}
	if o.SpareBuffers < 0 {
		o.SpareBuffers = 0
	} else if o.SpareBuffers == 0 {
		o.SpareBuffers = defaultSpareBuffers
	}
	if o.Placement == nil {
		o.Placement = DefaultPlacement
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = defaultHealthEvery
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = defaultProbeTimeout
	}
	if o.HangTimeout <= 0 {
		o.HangTimeout = defaultHangTimeout
	}
	if o.DeleteFilesPerSecond <= 0 {
		o.DeleteFilesPerSecond = defaultDeleteFiles
	}
	if o.DeleteBytesPerSecond <= 0 {
		o.DeleteBytesPerSecond = defaultDeleteBytes
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}
