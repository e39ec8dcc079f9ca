package fsck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/tools/progress"
)

// Defaults of Options. Reads of 4 MiB, four in flight per file, are the
// pattern fio reads a disk at full speed with (BENCHMARKS.md compares the
// two); two jobs keep the disk busy across the end of one file and the
// start of the next.
const (
	DefaultReadBytes     = 4 << 20
	DefaultReadsInFlight = 4
	DefaultJobs          = 2
)

// Options tune Check.
type Options struct {
	// Backend is the IO backend (diskio.Backends); "" means auto, which
	// reads with O_DIRECT through io_uring where it can, and falls back to
	// the page cache per file where the filesystem refuses O_DIRECT.
	Backend string
	// IO, when set, is used instead of one made for Backend (tests pass a
	// diskio.Faulty). Check does not close it.
	IO diskio.IO
	// Jobs is how many files are verified at once; 0 means DefaultJobs.
	Jobs int
	// ReadBytes is the size of each read, a multiple of 4096; 0 means
	// DefaultReadBytes.
	ReadBytes int
	// ReadsInFlight is how many reads each job keeps queued (2 is double
	// buffering); 0 means DefaultReadsInFlight.
	ReadsInFlight int
	// Quarantine, when set, is the directory CORRUPT partitions are moved
	// into (see the package comment).
	Quarantine string
	// Progress, when set, receives a progress bar (a terminal line
	// rewritten in place). The command sets it when stderr is a terminal.
	Progress io.Writer
	// Log receives warnings (IO fallbacks); nil discards them.
	Log *slog.Logger
}

// Status is the verdict on one file.
type Status string

// Statuses, as printed.
const (
	StatusOK         Status = "OK"
	StatusCorrupt    Status = "CORRUPT"
	StatusIncomplete Status = "INCOMPLETE"
	StatusError      Status = "ERROR"
	StatusOther      Status = "OTHER"
)

// CommitState is what the disk's commit log says of a partition.
type CommitState string

// Commit states.
const (
	// CommitCommitted: a live record names the partition.
	CommitCommitted CommitState = "committed"
	// CommitNone: no live record names it.
	CommitNone CommitState = "never committed"
	// CommitUnknown: there is no trustworthy commit log to ask (a file
	// given alone, or a disk whose log is missing or corrupt).
	CommitUnknown CommitState = "unknown"
)

// Kinds of Result, as printed: the layout.FileKind names, and two more.
const (
	KindOther = "other" // a file that is not a Sluice file name
	KindDisk  = "disk"  // the disk directory itself (walk and lock errors)
	KindPath  = "path"  // an argument that is neither a disk nor a file
)

// BitFlip locates the single flipped bit that explains a checksum mismatch.
type BitFlip struct {
	Offset int64 `json:"offset"`      // file offset of the byte
	Bit    uint8 `json:"bit"`         // 0 = least significant
	InCRC  bool  `json:"in_checksum"` // the bit is in the stored checksum
}

// Result is the verdict on one file (or one missing file, or one path).
type Result struct {
	Type   string      `json:"type"` // always "file"; the summary's is "summary"
	Path   string      `json:"path"`
	Disk   string      `json:"disk,omitempty"` // the disk directory, as given
	File   string      `json:"file,omitempty"` // the path relative to the disk
	Kind   string      `json:"kind"`
	Status Status      `json:"status"`
	Commit CommitState `json:"commit,omitempty"` // partitions only

	// The partition's identity, from its path (or its header, for a
	// file given alone).
	Job     string  `json:"job,omitempty"`
	Dataset string  `json:"dataset,omitempty"`
	Map     *uint32 `json:"map,omitempty"`
	Attempt *uint32 `json:"attempt,omitempty"`
	Reduce  *uint32 `json:"reduce,omitempty"`

	Size int64 `json:"size"`
	// Offset, What, Truncated and BitFlip say what is wrong (CORRUPT,
	// ERROR; for INCOMPLETE, what a verify of the bytes found).
	Offset    *int64   `json:"offset,omitempty"`
	What      string   `json:"what,omitempty"`
	Truncated bool     `json:"truncated,omitempty"`
	BitFlip   *BitFlip `json:"bit_flip,omitempty"`
	// Detail describes a good file (regions, buffers, segments…).
	Detail string `json:"detail,omitempty"`

	// QuarantinedTo is where --quarantine moved the file; Released says
	// the commit log now releases the partition; QuarantineError says why
	// either failed.
	QuarantinedTo   string `json:"quarantined_to,omitempty"`
	Released        bool   `json:"released,omitempty"`
	QuarantineError string `json:"quarantine_error,omitempty"`
}

// Summary counts the results of one Check.
type Summary struct {
	Type       string `json:"type"` // "summary"
	Disks      int    `json:"disks"`
	Files      int    `json:"files"`      // results reported
	Partitions int    `json:"partitions"` // of which MapPartitions and ReducePartitions
	OK         int    `json:"ok"`
	Corrupt    int    `json:"corrupt"`
	Incomplete int    `json:"incomplete"`
	Errors     int    `json:"errors"`
	Other      int    `json:"other"`

	Quarantined   int    `json:"quarantined,omitempty"` // files moved
	Released      int    `json:"released,omitempty"`    // partitions released in commit logs
	QuarantineDir string `json:"quarantine_dir,omitempty"`

	Bytes   int64   `json:"bytes_verified"`
	Seconds float64 `json:"seconds"`
	MiBs    float64 `json:"mib_s"`
	Backend string  `json:"backend"`
	Direct  bool    `json:"direct"`
	Jobs    int     `json:"jobs"`

	// Exit is the command's exit status: 0 all clean, 1 corruption found,
	// 2 a file could not be checked (IO error, newer format) or a
	// quarantine step failed.
	Exit int `json:"exit"`
}

func (s *Summary) count(r *Result) {
	s.Files++
	if r.Kind == layout.KindMapPartition.String() || r.Kind == layout.KindReducePartition.String() {
		s.Partitions++
	}
	switch r.Status {
	case StatusOK:
		s.OK++
	case StatusCorrupt:
		s.Corrupt++
	case StatusIncomplete:
		s.Incomplete++
	case StatusError:
		s.Errors++
	case StatusOther:
		s.Other++
	}
	if r.QuarantinedTo != "" {
		s.Quarantined++
	}
	if r.Released {
		s.Released++
	}
	if r.QuarantineError != "" {
		s.Errors++
	}
}

func (s *Summary) exitCode() int {
	switch {
	case s.Errors > 0:
		return 2
	case s.Corrupt > 0:
		return 1
	}
	return 0
}

// Check verifies the disks and files at paths and calls report with each
// result, in order: disk by disk (IDENTITY, COMMITLOG, then every file and
// missing file by path), then the files given alone, in the order given.
// Problems with paths and files are results (ERROR), not errors; the error
// is for what prevents checking at all (bad options, no IO).
func Check(ctx context.Context, paths []string, opts Options, report func(*Result)) (Summary, error) {
	start := time.Now()
	c, err := newChecker(opts)
	if err != nil {
		return Summary{}, err
	}
	defer func() {
		if cerr := c.close(); cerr != nil && c.log != nil {
			c.log.Warn("fsck: closing the IO", "err", cerr)
		}
	}()
	units, err := c.plan(ctx, paths)
	if err != nil {
		return Summary{}, err
	}
	c.prog.Start()
	c.verify(ctx, units, report)
	c.prog.Finish()

	s := &c.sum
	s.Type = "summary"
	s.Seconds = time.Since(start).Seconds()
	s.Bytes = c.bytes.Load()
	if s.Seconds > 0 {
		s.MiBs = float64(s.Bytes) / (1 << 20) / s.Seconds
	}
	info := c.ios.info()
	s.Backend, s.Direct, s.Jobs = info.Backend, info.Direct, c.jobs
	s.QuarantineDir = c.opts.Quarantine
	s.Exit = s.exitCode()
	return *s, nil
}

// checker is one run of Check.
type checker struct {
	opts   Options
	log    *slog.Logger
	jobs   int
	depth  int
	ios    *ios
	pool   *mem.Pool
	meta   *reader   // reads IDENTITY and COMMITLOG files, on the calling goroutine
	work   []*reader // one per job
	prog   *progress.Bar
	bytes  atomic.Int64
	sum    Summary
	qdir   string
	manMu  sync.Mutex
	seenID map[layout.ID]string
	locked []*diskQuarantine // disks locked for quarantine
}

func newChecker(opts Options) (*checker, error) {
	c := &checker{opts: opts, log: opts.Log, jobs: opts.Jobs, depth: opts.ReadsInFlight, seenID: make(map[layout.ID]string)}
	if c.log == nil {
		c.log = discardLog()
		c.opts.Log = c.log
	}
	if c.jobs == 0 {
		c.jobs = DefaultJobs
	}
	if c.depth == 0 {
		c.depth = DefaultReadsInFlight
	}
	readBytes := opts.ReadBytes
	if readBytes == 0 {
		readBytes = DefaultReadBytes
	}
	switch {
	case c.jobs < 1 || c.jobs > 256:
		return nil, fmt.Errorf("fsck: jobs %d out of range [1, 256]", c.jobs)
	case c.depth < 1 || c.depth > 64:
		return nil, fmt.Errorf("fsck: reads in flight %d out of range [1, 64]", c.depth)
	case readBytes < 4096 || readBytes%4096 != 0 || readBytes > diskio.MaxRequestBytes:
		return nil, fmt.Errorf("fsck: read size %d is not a multiple of 4096 in [4096, %d]", readBytes, diskio.MaxRequestBytes)
	}
	if opts.Quarantine != "" {
		abs, err := filepath.Abs(opts.Quarantine)
		if err != nil {
			return nil, fmt.Errorf("fsck: quarantine directory: %w", err)
		}
		c.qdir = abs
	}
	var err error
	if c.ios, err = newIOs(&c.opts, (c.jobs+1)*c.depth); err != nil {
		return nil, err
	}
	c.pool, err = mem.New(mem.Config{BufferBytes: readBytes, Buffers: (c.jobs + 1) * c.depth})
	if err != nil {
		return nil, errors.Join(err, c.ios.close())
	}
	if _, err := c.ios.primary.RegisterMemory(c.pool.Memory(), readBytes); err != nil {
		c.log.Warn("fsck: read buffers not registered with the IO", "err", err)
	}
	c.meta = newReader(c.ios, c.pool, c.depth)
	for range c.jobs {
		c.work = append(c.work, newReader(c.ios, c.pool, c.depth))
	}
	c.prog = progress.New(opts.Progress, "fsck")
	return c, nil
}

func (c *checker) close() error {
	var err error
	for _, q := range c.locked {
		err = errors.Join(err, q.unlock())
	}
	err = errors.Join(err, c.ios.close())
	c.meta.release()
	for _, r := range c.work {
		r.release()
	}
	return errors.Join(err, c.pool.Close())
}

// verify runs the jobs over every file to read and reports every result in
// plan order as soon as it and those before it are known. The results of a
// disk being quarantined are held until its commit log has released its
// bad partitions, so that what is reported is what was done.
func (c *checker) verify(ctx context.Context, units []*unit, report func(*Result)) {
	queue := make(chan *entry)
	var wg sync.WaitGroup
	for _, rd := range c.work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range queue {
				c.checkFile(ctx, rd, e)
				close(e.done)
			}
		}()
	}
	go func() {
		defer close(queue)
		for _, u := range units {
			for _, e := range u.entries {
				if e.ready() {
					continue
				}
				select {
				case queue <- e:
				case <-ctx.Done():
					e.res.Status, e.res.What = StatusError, "not checked: "+ctx.Err().Error()
					close(e.done)
				}
			}
		}
	}()
	emit := func(e *entry) {
		c.sum.count(&e.res)
		c.prog.Pause(func() { report(&e.res) })
	}
	for _, u := range units {
		if u.disk != nil {
			c.sum.Disks++
		}
		if u.disk == nil || u.disk.q == nil {
			for _, e := range u.entries {
				<-e.done
				emit(e)
			}
			continue
		}
		for _, e := range u.entries {
			<-e.done
		}
		c.release(ctx, u)
		for _, e := range u.entries {
			emit(e)
		}
	}
	wg.Wait()
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
