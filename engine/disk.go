package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
	"golang.org/x/sys/unix"
)

// Disk is one data directory on one device: its identity, its IO (its own
// io_uring), its share of the worker's buffer pool for write buffers, its
// commit log with its group committer, the partitions it holds, and its
// health. A Store owns its disks; the read scheduler and the network service
// use IO, Pool and the accessors.
type Disk struct {
	store    *Store
	cfg      *Config
	log      *slog.Logger
	path     string
	identity layout.DiskIdentity
	dev      device
	typ      DiskType
	align    diskio.Alignment
	fsBlock  int64 // the file system's block size
	io       diskio.IO
	share    *mem.Share
	bufBytes int
	reserve  int64
	lockFD   int

	state    atomic.Uint32 // DiskState
	failMu   sync.Mutex
	failErr  error
	capacity atomic.Int64
	free     atomic.Int64
	pending  atomic.Int64 // bytes accepted by writers and not yet written
	waiters  atomic.Int32 // writers waiting for a buffer of the share

	// Writes in flight: a fixed table of operations and a free list; at most
	// ioMax writes in the IO (inIO), the others in the FIFO waitQ. Writes
	// complete through completeFn on the IO's goroutine.
	ops        []writeOp
	freeOps    chan *writeOp
	completeFn func(*diskio.Request)
	opMu       sync.Mutex
	opDrained  sync.Cond // nothing queued or in the IO (drainQueue)
	waitQ      []*writeOp
	qHead      int
	qLen       int
	inIO       int
	ioMax      int
	opsClosed  bool
	handing    bool // a releaseSlot is handing slots to queued writes
	// qLen and inIO, for readers without the lock (stats, the flusher).
	writesWaiting atomic.Int32
	writesInIO    atomic.Int32
	bg            sync.WaitGroup // flusher and deleter

	// Streams with buffers, for the pressure flusher.
	streamsMu sync.Mutex
	streams   map[*stream]struct{}
	pressure  chan struct{}
	idle      chan struct{}

	// The catalogue of partitions.
	mu       sync.Mutex
	maps     map[layout.MapKey]*mapEntry
	writing  map[layout.MapKey]*MapWriter
	reduces  map[layout.ReduceKey]*ReducePartition
	released map[datasetKey]bool // deleting: no new partitions until done
	dirs     map[string]bool     // directories known to exist (relative)
	dirty    map[string]bool     // directories with entries not yet fsynced (relative)
	inodes   *inodeDir           // where new files get their inodes (inodes.go)
	// After a failure to make an inode directory: creations left before
	// the next try, and whether the failure was logged.
	inodesSkip    int
	inodesFailing bool
	intern        map[string]string

	clog        *commitLog
	clogRunning bool
	deleter     *deleter
	health      *health
	stats       diskCounters

	closing chan struct{}
	creator *creator // new ReducePartition files (started with the disk)
	closed  atomic.Bool
}

// mapEntry is a committed MapPartition.
type mapEntry struct {
	length    int64
	footerCRC uint32
	verified  atomic.Bool // header, footer and directory checked against the record
	lost      atomic.Bool
}

type datasetKey struct{ job, dataset string }

// Files and directories of a disk besides the layout's.
const (
	quarantineDir = "quarantine"
	probeFile     = ".health-probe"
	logTempFile   = layout.CommitLogFile + ".tmp"
	identityTemp  = layout.DiskIdentityFile + ".tmp"
)

// Path is the disk's data directory.
func (d *Disk) Path() string { return d.path }

// ID is the disk's persistent identity.
func (d *Disk) ID() layout.ID { return d.identity.Disk }

// Type is the device type (detected, or as configured).
func (d *Disk) Type() DiskType { return d.typ }

// State is the disk's health.
func (d *Disk) State() DiskState { return DiskState(d.state.Load()) }

// Err is why the disk failed, or nil.
func (d *Disk) Err() error {
	d.failMu.Lock()
	defer d.failMu.Unlock()
	return d.failErr
}

// failedErr is the error operations on a failed disk return: ErrDiskFailed
// and the cause, both matching errors.Is.
func (d *Disk) failedErr() error {
	cause := d.Err()
	if cause == nil {
		return fmt.Errorf("%w: %s", ErrDiskFailed, d.path)
	}
	if errors.Is(cause, ErrDiskFailed) {
		return cause
	}
	return fmt.Errorf("%w: %s: %w", ErrDiskFailed, d.path, cause)
}

// IO is the disk's IO seam: the read scheduler reads extents through it.
func (d *Disk) IO() diskio.IO { return d.io }

// Alignment is the disk's DIO alignment.
func (d *Disk) Alignment() diskio.Alignment { return d.align }

// Free is the free space statfs reported last.
func (d *Disk) Free() int64 { return d.free.Load() }

// Capacity is the file system's size.
func (d *Disk) Capacity() int64 { return d.capacity.Load() }

// Reserve is the free space below which the disk takes no new partitions.
func (d *Disk) Reserve() int64 { return d.reserve }

// PendingBytes is what the disk's writers accepted and have not written yet.
func (d *Disk) PendingBytes() int64 { return d.pending.Load() }

// abs returns the absolute path of a path relative to the disk.
func (d *Disk) abs(rel string) string { return filepath.Join(d.path, filepath.FromSlash(rel)) }

// openDisk prepares a disk up to recovery: directory, lock, IO, identity
// (read, not created), device and space. The caller closes it on error.
func openDisk(s *Store, dc DirConfig) (*Disk, error) {
	cfg := &s.cfg
	path, err := filepath.Abs(dc.Path)
	if err != nil {
		return nil, fmt.Errorf("engine: data directory %q: %w", dc.Path, err)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("engine: data directory: %w", err)
	}
	d := &Disk{
		store:    s,
		cfg:      cfg,
		log:      cfg.Log.With("disk", path),
		path:     path,
		lockFD:   -1,
		bufBytes: cfg.BufferBytes,
		streams:  make(map[*stream]struct{}),
		pressure: make(chan struct{}, 1),
		idle:     make(chan struct{}, 1),
		maps:     make(map[layout.MapKey]*mapEntry),
		writing:  make(map[layout.MapKey]*MapWriter),
		reduces:  make(map[layout.ReduceKey]*ReducePartition),
		released: make(map[datasetKey]bool),
		dirs:     make(map[string]bool),
		dirty:    make(map[string]bool),
		intern:   make(map[string]string),
		closing:  make(chan struct{}),
	}
	// The same lock fsck takes: no fsck changes a disk a worker owns.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("engine: open %s: %w", path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		cerr := unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errors.Join(fmt.Errorf("engine: the disk %s is locked by another process (a running worker, or fsck)", path), cerr)
		}
		return nil, errors.Join(fmt.Errorf("engine: flock %s: %w", path, err), cerr)
	}
	d.lockFD = fd

	if d.dev, err = deviceOf(path, cfg.SysRoot); err != nil {
		return d, err
	}
	d.typ = d.dev.Type
	if dc.Type != DiskUnknown {
		d.typ = dc.Type
	}
	sp, err := statSpace(path)
	if err != nil {
		return d, err
	}
	d.capacity.Store(sp.Capacity)
	d.free.Store(sp.Free)
	d.fsBlock = sp.Block
	switch {
	case cfg.ReserveBytes > 0:
		d.reserve = cfg.ReserveBytes
	case cfg.ReserveBytes == 0:
		d.reserve = min(defaultReserveBytes, sp.Capacity/20)
	}

	io, err := diskio.New(diskio.Config{Backend: cfg.Backend, Depth: cfg.Depth, Dir: path, Log: d.log})
	if err != nil {
		return d, err
	}
	if cfg.WrapIO != nil {
		io = cfg.WrapIO(path, io)
	}
	d.io = io
	if err := d.probeAlignment(); err != nil {
		return d, err
	}
	if d.align.Offset > 1 && (cfg.BufferBytes%d.align.Offset != 0 || cfg.BufferBytes%d.align.Memory != 0) {
		return d, fmt.Errorf("engine: buffer size %d is not a multiple of the DIO alignment of %s (%d/%d)", cfg.BufferBytes, path, d.align.Memory, d.align.Offset)
	}
	if _, err := io.RegisterMemory(s.pool.Memory(), s.pool.BufferBytes()); err != nil {
		d.log.Warn("engine: buffers not registered with the IO", "err", err)
	}

	d.stats.init()
	return d, nil
}

// probeAlignment opens a probe file through the IO to learn the DIO
// alignment of files in the directory.
func (d *Disk) probeAlignment() error {
	p := filepath.Join(d.path, probeFile)
	f, err := d.io.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("engine: probe %s: %w", d.path, err)
	}
	d.align = f.Alignment()
	return errors.Join(f.Close(), os.Remove(p))
}

// readIdentity reads the disk's IDENTITY, if any.
func (d *Disk) readIdentity() (layout.DiskIdentity, bool, error) {
	b, err := d.readWhole(layout.DiskIdentityFile)
	if errors.Is(err, os.ErrNotExist) {
		return layout.DiskIdentity{}, false, nil
	}
	if err != nil {
		return layout.DiskIdentity{}, false, err
	}
	id, _, err := layout.DecodeDiskIdentity(b)
	if err != nil {
		return layout.DiskIdentity{}, false, fmt.Errorf("engine: %s: %w", d.abs(layout.DiskIdentityFile), err)
	}
	return id, true, nil
}

// createIdentity writes a new IDENTITY for worker: to a temporary file,
// synced, renamed, and the directory synced. A disk that holds a commit log
// or data but no identity is refused: it is not ours to adopt.
func (d *Disk) createIdentity(worker layout.ID) error {
	for _, name := range []string{layout.CommitLogFile, layout.DataDir} {
		if _, err := os.Lstat(d.abs(name)); err == nil {
			return fmt.Errorf("engine: %s has %s but no %s: not a Sluice disk this worker can adopt (move it away, or restore its identity)", d.path, name, layout.DiskIdentityFile)
		}
	}
	id := layout.DiskIdentity{Worker: worker, Created: time.Now().UTC()}
	if _, err := rand.Read(id.Disk[:]); err != nil {
		return fmt.Errorf("engine: disk id: %w", err)
	}
	b, err := layout.AppendDiskIdentity(nil, &id)
	if err != nil {
		return err
	}
	if err := d.writeWhole(identityTemp, b); err != nil {
		return err
	}
	if err := os.Rename(d.abs(identityTemp), d.abs(layout.DiskIdentityFile)); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if err := diskio.SyncDir(d.path); err != nil {
		return err
	}
	d.identity = id
	return nil
}

// internStr returns one copy of each distinct id: a disk's partitions share
// few jobs and datasets.
func (d *Disk) internStr(s string) string {
	if v, ok := d.intern[s]; ok {
		return v
	}
	d.intern[s] = s
	return s
}

// setState moves the disk to state; it reports whether the state changed.
// A failed disk stays failed.
func (d *Disk) setState(to DiskState) bool {
	for {
		from := d.state.Load()
		if DiskState(from) == DiskFailed || DiskState(from) == to {
			return false
		}
		if d.state.CompareAndSwap(from, uint32(to)) {
			return true
		}
	}
}

// noteFault records what an IO error says about the disk.
func (d *Disk) noteFault(err error) {
	switch classify(err) {
	case faultFull:
		d.stats.faultsFull.Add(1)
		d.markFull(err)
	case faultFailed:
		d.stats.faultsFailed.Add(1)
		d.markFailed(err)
	}
}

func (d *Disk) markFull(cause error) {
	if d.setState(DiskFull) {
		d.log.Warn("engine: disk full; it takes no new partitions until space is back above the reserve", "err", cause)
		d.store.emit(Event{Kind: EventDiskFull, Disk: d.ID(), DiskPath: d.path, Err: cause})
	}
}

// markFailed fails the disk: every partition it holds is reported lost and
// its writers fail. It runs once.
func (d *Disk) markFailed(cause error) {
	if !d.setState(DiskFailed) {
		return
	}
	d.failMu.Lock()
	d.failErr = cause
	d.failMu.Unlock()
	d.stats.failures.Add(1)
	d.log.Error("engine: disk failed; its partitions are lost, the other disks go on", "err", cause)
	ev := Event{Kind: EventDiskFailed, Disk: d.ID(), DiskPath: d.path, Err: cause}
	d.mu.Lock()
	for k, e := range d.maps {
		e.lost.Store(true)
		ev.Lost = append(ev.Lost, mapRef(k))
	}
	for k := range d.writing {
		ev.Lost = append(ev.Lost, mapRef(k))
	}
	for k := range d.reduces {
		ev.Lost = append(ev.Lost, reduceRef(k))
	}
	d.mu.Unlock()
	d.store.emit(ev)
}

// usable reports whether the disk may take a new partition now.
func (d *Disk) usable() error {
	switch d.State() {
	case DiskFailed:
		return d.failedErr()
	case DiskFull:
		return fmt.Errorf("%w: %s", ErrDiskFull, d.path)
	}
	if d.closed.Load() {
		return ErrClosed
	}
	return nil
}

// refreshSpace updates free space and leaves the full state once free space
// is above the reserve again.
func (d *Disk) refreshSpace() {
	sp, err := statSpace(d.path)
	if err != nil {
		return
	}
	d.capacity.Store(sp.Capacity)
	d.free.Store(sp.Free)
	if d.State() == DiskFull && sp.Free > d.reserve {
		if d.state.CompareAndSwap(uint32(DiskFull), uint32(DiskHealthy)) {
			d.log.Info("engine: disk has space again", "free", sp.Free, "reserve", d.reserve)
			d.store.emit(Event{Kind: EventDiskRecovered, Disk: d.ID(), DiskPath: d.path})
		}
	}
}

// ensureDir creates the directory rel (relative, slash-separated) and its
// parents, marking every directory that got a new entry dirty, so that the
// next group commit fsyncs it before the record that needs the entry.
// Called with d.mu held.
func (d *Disk) ensureDirLocked(rel string) error {
	if d.dirs[rel] {
		return nil
	}
	parent := filepath.ToSlash(filepath.Dir(rel))
	if parent != "." {
		if err := d.ensureDirLocked(parent); err != nil {
			return err
		}
	}
	err := os.Mkdir(d.abs(rel), 0o755)
	switch {
	case err == nil:
		if parent == "." {
			parent = ""
		}
		d.dirty[parent] = true
		if rel == layout.DataDir {
			d.spreadJobs()
		}
	case errors.Is(err, os.ErrExist):
	default:
		return fmt.Errorf("engine: %w", err)
	}
	d.dirs[rel] = true
	return nil
}

// spreadJobs spreads the disk's job and inode directories over the device
// (see spreadSubdirs); a failure is logged, not an error.
func (d *Disk) spreadJobs() {
	err := spreadSubdirs(d.abs(layout.DataDir))
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EOPNOTSUPP):
		d.log.Debug("engine: the file system places the job directories", "err", err)
	default:
		d.log.Warn("engine: the file system places the job directories", "err", err)
	}
}

// takeDirty returns the directories to fsync before the next records.
func (d *Disk) takeDirty(dst []string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for dir := range d.dirty {
		dst = append(dst, dir)
		delete(d.dirty, dir)
	}
	return dst
}

func (d *Disk) markDirty(dirs []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dir := range dirs {
		d.dirty[dir] = true
	}
}

// createFile creates a partition file of dataset ds (relative path)
// exclusively, its directories as needed, and opens it through the IO. A
// dataset being released gets no new file (ErrReleased): its directories
// are about to be deleted, and must not be remembered as existing.
func (d *Disk) createFile(rel string, ds datasetKey) (*diskio.File, error) {
	d.mu.Lock()
	err := ErrReleased
	if !d.releasing(ds.job, ds.dataset) {
		err = d.ensureDirLocked(filepath.ToSlash(filepath.Dir(rel)))
	}
	var p *inodeDir
	var drop string
	if err == nil {
		p, drop = d.inodeDirLocked()
	}
	d.mu.Unlock()
	d.removeInodeDir(drop)
	if err != nil {
		return nil, err
	}
	near := ""
	if p != nil {
		near = d.abs(p.rel)
	}
	f, err := diskio.CreateFile(d.io, d.abs(rel), near, 0o644)
	d.mu.Lock()
	if p != nil {
		drop = d.leaveInodeDirLocked(p)
	}
	if err == nil {
		// After the link: a group commit that took the directory before
		// would have synced it without the new name.
		d.dirty[filepath.ToSlash(filepath.Dir(rel))] = true
	}
	d.mu.Unlock()
	d.removeInodeDir(drop)
	if err != nil {
		return nil, fmt.Errorf("engine: create %s: %w", rel, err)
	}
	return f, nil
}

// readWhole reads a small file (identity, commit log) through the IO.
func (d *Disk) readWhole(rel string) ([]byte, error) {
	f, err := d.io.OpenFile(d.abs(rel), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	a := int64(max(f.Alignment().Offset, f.Alignment().Memory, 1))
	buf := alignedBytes(int(roundUp(size, a)), int(a))
	var n int
	for n < int(size) {
		chunk := min(len(buf)-n, 16<<20)
		r := &diskio.Request{Op: diskio.OpRead, File: f, Buf: buf[n : n+chunk], Off: int64(n)}
		if err := diskio.Do(d.io, r); err != nil {
			return nil, err
		}
		n += r.N
		if r.N < chunk {
			break
		}
	}
	return buf[:min(n, int(size))], nil
}

// writeWhole writes a small file (relative path) through the IO: padded,
// truncated to its length, synced.
func (d *Disk) writeWhole(rel string, b []byte) error {
	f, err := d.io.OpenFile(d.abs(rel), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	return errors.Join(d.writeFileWhole(f, b), f.Close())
}

// writeFileWhole makes b the whole content of the open file f through the
// IO: written padded, truncated to its length, synced.
func (d *Disk) writeFileWhole(f *diskio.File, b []byte) error {
	a := int64(max(f.Alignment().Offset, f.Alignment().Memory, 1))
	buf := alignedBytes(int(roundUp(int64(len(b)), a)), int(a))
	copy(buf, b)
	if err := diskio.Do(d.io, &diskio.Request{Op: diskio.OpWrite, File: f, Buf: buf, Off: 0}); err != nil {
		return err
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		return err
	}
	return diskio.Do(d.io, &diskio.Request{Op: diskio.OpSync, File: f})
}

// alignedBytes returns n zeroed bytes whose address is a multiple of align,
// from the Go heap (which never moves objects).
func alignedBytes(n, align int) []byte {
	if align <= 1 {
		return make([]byte, n)
	}
	b := make([]byte, n+align)
	off := 0
	if r := int(bufAddr(b) % uintptr(align)); r != 0 {
		off = align - r
	}
	return b[off : off+n : off+n]
}

func roundUp(n, a int64) int64 {
	if a <= 1 {
		return n
	}
	return (n + a - 1) / a * a
}

func alignDown(n, a int64) int64 {
	if a <= 1 {
		return n
	}
	return n / a * a
}

// ctxDone is a context that is never done, for internal waits.
var ctxBackground = context.Background()
