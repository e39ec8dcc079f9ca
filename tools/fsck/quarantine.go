package fsck

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
	"golang.org/x/sys/unix"
)

// ManifestFile is the name of the manifest in a quarantine directory: one
// JSON object (a ManifestEntry) per line, appended and synced before the
// step it records is reported.
const ManifestFile = "MANIFEST.jsonl"

// Manifest actions.
const (
	ActionMoved    = "moved"    // the file was moved from From to To
	ActionReleased = "released" // the commit log released the partition (record LSN)
	ActionRestored = "restored" // Restore put the file and its commit back
)

// ManifestEntry records one step of a quarantine or a restore, with what it
// takes to undo it: the partition's commit as the log held it.
type ManifestEntry struct {
	Time   time.Time `json:"time"`
	Action string    `json:"action"`
	Disk   string    `json:"disk"`    // absolute path of the disk directory
	DiskID string    `json:"disk_id"` // from its IDENTITY
	File   string    `json:"file"`    // path relative to the disk
	From   string    `json:"from,omitempty"`
	To     string    `json:"to,omitempty"`
	What   string    `json:"what,omitempty"` // why it was quarantined
	LSN    uint64    `json:"lsn,omitempty"`  // of the Released (or re-committing) record

	MapCommit    *layout.MapCommit   `json:"map_commit,omitempty"`
	ReduceCommit *layout.ReduceState `json:"reduce_commit,omitempty"`
}

// diskQuarantine is the quarantine of one disk: where its files go and the
// lock that keeps a worker (and another fsck) off the disk meanwhile.
type diskQuarantine struct {
	root string // the disk's directory in the quarantine directory
	lock int    // flock'ed descriptor of the disk directory; -1 when none
	// refuse says why nothing may be moved from this disk, if so.
	refuse string
}

// lockDisk takes an exclusive flock(2) on the disk directory, without
// waiting. This is the contract with the engine, which takes the same lock
// while it owns a disk: fsck never changes a disk a worker is using, and a
// worker never starts on a disk fsck is changing.
func lockDisk(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		cerr := unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return -1, errors.Join(fmt.Errorf("the disk %s is locked by another process (a running worker, or another fsck)", dir), cerr)
		}
		return -1, errors.Join(fmt.Errorf("flock %s: %w", dir, err), cerr)
	}
	return fd, nil
}

func unlockDisk(fd int) error {
	if fd < 0 {
		return nil
	}
	// Closing the descriptor releases the flock.
	return unix.Close(fd)
}

// startQuarantine prepares the quarantine of a disk, at plan time: it locks
// the disk so that nothing changes it between the check and the moves.
func (c *checker) startQuarantine(d *disk) *diskQuarantine {
	q := &diskQuarantine{lock: -1}
	switch {
	case !d.idOK:
		q.refuse = "the disk's IDENTITY is not trustworthy"
	case d.cat == nil:
		q.refuse = "the disk's COMMITLOG is not trustworthy"
	}
	if q.refuse != "" {
		return q
	}
	q.root = filepath.Join(c.qdir, d.id.String())
	fd, err := lockDisk(d.dir)
	if err != nil {
		q.refuse = err.Error()
		return q
	}
	q.lock = fd
	return q
}

// unlock releases the disk's lock, once.
func (q *diskQuarantine) unlock() error {
	fd := q.lock
	q.lock = -1
	return unlockDisk(fd)
}

// release quarantines the CORRUPT committed partitions of a disk, once all
// of them are known: it moves each file into the quarantine directory,
// then releases them all, and the partitions whose file is missing, in one
// group-commit write to the disk's commit log. Each step is recorded in the
// manifest before it is reported.
func (c *checker) release(ctx context.Context, u *unit) {
	d, q := u.disk, u.disk.q
	defer func() {
		if err := q.unlock(); err != nil {
			c.log.Warn("fsck: unlocking the disk", "disk", d.dir, "err", err)
		}
	}()
	var bad []*entry
	for _, e := range u.entries {
		if e.res.Status == StatusCorrupt && e.disk != nil && e.res.Commit != "" {
			bad = append(bad, e)
		}
	}
	if len(bad) == 0 {
		return
	}
	if q.refuse == "" && ctx.Err() != nil {
		q.refuse = "fsck was interrupted"
	}
	if q.refuse != "" {
		for _, e := range bad {
			e.res.QuarantineError = "not quarantined: " + q.refuse
		}
		return
	}
	var recs []layout.Record
	var released []*entry
	for _, e := range bad {
		if e.path != "" {
			dst, err := c.moveAside(d, e)
			if err != nil {
				e.res.QuarantineError = "not moved: " + err.Error()
				continue
			}
			e.res.QuarantinedTo = dst
		}
		recs = append(recs, releaseRecord(e.parsed))
		released = append(released, e)
	}
	if len(recs) == 0 {
		return
	}
	first, err := c.appendRecords(ctx, d, recs)
	if err != nil {
		for _, e := range released {
			e.res.QuarantineError = "the commit log still names it: " + err.Error()
		}
		return
	}
	for i, e := range released {
		m := c.manifestEntry(d, e, ActionReleased)
		m.LSN = first + uint64(i)
		if err := c.appendManifest(&m); err != nil {
			e.res.QuarantineError = "released, but not recorded in the manifest: " + err.Error()
		}
		e.res.Released = true
	}
}

func releaseRecord(pp layout.ParsedPath) layout.Record {
	if pp.Kind == layout.PathMap {
		k := pp.Map
		return layout.Record{Kind: layout.RecordReleased, Scope: layout.ReleaseMap, Job: []byte(k.Job), Dataset: []byte(k.Dataset), Index: k.Map, Attempt: k.Attempt}
	}
	k := pp.Reduce
	return layout.Record{Kind: layout.RecordReleased, Scope: layout.ReleaseReduce, Job: []byte(k.Job), Dataset: []byte(k.Dataset), Index: k.Reduce}
}

func (c *checker) manifestEntry(d *disk, e *entry, action string) ManifestEntry {
	m := ManifestEntry{Time: time.Now().UTC(), Action: action, Disk: d.abs, DiskID: d.id.String(), File: e.res.File, What: e.res.What}
	if e.res.QuarantinedTo != "" {
		m.From, m.To = filepath.Join(d.abs, filepath.FromSlash(e.res.File)), e.res.QuarantinedTo
	}
	switch e.parsed.Kind {
	case layout.PathMap:
		if mc, ok := d.cat.Maps[e.parsed.Map]; ok {
			m.MapCommit = &mc
		}
	case layout.PathReduce:
		if st := d.cat.Reduces[e.parsed.Reduce]; st != nil {
			cp := *st
			m.ReduceCommit = &cp
		}
	}
	return m
}

// moveAside moves a partition file to the disk's quarantine directory,
// under the same relative path (with a numeric suffix if a file of that
// name was quarantined before), and records the move.
func (c *checker) moveAside(d *disk, e *entry) (string, error) {
	dst := filepath.Join(d.q.root, filepath.FromSlash(e.res.File))
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			return "", err
		}
		dst = filepath.Join(d.q.root, filepath.FromSlash(e.res.File)) + "." + strconv.Itoa(i)
	}
	if err := mkdirAllSynced(filepath.Dir(dst), c.qdir); err != nil {
		return "", err
	}
	if err := moveFile(e.path, dst); err != nil {
		return "", err
	}
	e.res.QuarantinedTo = dst
	m := c.manifestEntry(d, e, ActionMoved)
	if err := c.appendManifest(&m); err != nil {
		return dst, fmt.Errorf("moved to %s, but not recorded in the manifest: %w", dst, err)
	}
	return dst, nil
}

// syncDir makes a directory's entries durable; tests observe it.
var syncDir = diskio.SyncDir

// mkdirAllSynced creates dir and its missing parents up to (not above) top,
// syncing each parent whose entries changed, so that a file moved into dir
// cannot vanish with its directory in a crash.
func mkdirAllSynced(dir, top string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if dir != top && parent != dir {
		if err := mkdirAllSynced(parent, top); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// moveFile moves src to dst atomically per file: a rename(2) within one
// filesystem; across filesystems (EXDEV), a copy into a temporary file
// beside dst, fsync, rename into place, and only then the removal of src,
// so that at every instant at least one whole copy exists. Directories
// whose entries changed are synced.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if errors.Is(err, unix.EXDEV) {
		err = copyThenRemove(src, dst)
	}
	if err != nil {
		return err
	}
	return errors.Join(syncDir(filepath.Dir(dst)), syncDir(filepath.Dir(src)))
}

func copyThenRemove(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, in.Close()) }()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".partial"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return os.Remove(src)
}

// appendManifest appends one entry to the manifest and syncs it.
func (c *checker) appendManifest(m *ManifestEntry) error {
	c.manMu.Lock()
	defer c.manMu.Unlock()
	return appendManifest(c.qdir, m)
}

func appendManifest(qdir string, m *ManifestEntry) error {
	// The quarantine directory, its missing parents and (below) the
	// manifest's own entry are synced: a synced file whose name a crash
	// loses would lose the record of what was moved where.
	if err := mkdirAllSynced(qdir, ""); err != nil {
		return err
	}
	line, err := json.Marshal(m)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(qdir, ManifestFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	// Every time, not only when this call created the file: an earlier
	// call may have created it and failed before syncing the directory.
	return syncDir(qdir)
}

// readManifest reads every entry of a quarantine directory's manifest.
func readManifest(qdir string) ([]ManifestEntry, error) {
	f, err := os.Open(filepath.Join(qdir, ManifestFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []ManifestEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var m ManifestEntry
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", filepath.Join(qdir, ManifestFile), line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// appendRecords appends recs to the disk's commit log as group-commit
// writes, the way the engine does, and returns the LSN of the first. The
// log must be what it was when the disk was checked: if a worker wrote to
// it meanwhile, nothing is appended.
func (c *checker) appendRecords(ctx context.Context, d *disk, recs []layout.Record) (uint64, error) {
	path := filepath.Join(d.dir, layout.CommitLogFile)
	b, err := c.meta.readAll(ctx, path, maxLogBytes)
	if err != nil {
		return 0, err
	}
	_, hdr, end, err := layout.ReplayLog(b)
	if err != nil {
		return 0, err
	}
	if hdr != d.logHdr || end != d.logEnd {
		return 0, fmt.Errorf("the commit log changed while fsck ran (is a worker using the disk?)")
	}
	return appendToLog(path, hdr, end, recs)
}

// appendToLog writes recs after the valid records of the log at path. The
// torn tail of a crashed write, if any, is cut off first (recovery does the
// same): a record surviving in it could otherwise pass for one of ours.
func appendToLog(path string, hdr layout.LogHeader, end layout.LogEnd, recs []layout.Record) (first uint64, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	if err := f.Truncate(end.ValidLength); err != nil {
		return 0, err
	}
	first = hdr.FirstLSN + end.Records
	lsn, off := first, end.ValidLength
	var buf []byte
	for len(recs) > 0 {
		n := min(len(recs), layout.MaxBatchRecords)
		buf = buf[:0]
		for i := range recs[:n] {
			r := recs[i]
			r.LSN, r.BatchPos = lsn, uint16(i)
			lsn++
			if buf, err = layout.AppendRecord(buf, &r); err != nil {
				return 0, err
			}
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, fmt.Errorf("fdatasync %s: %w", path, err)
		}
		off += int64(len(buf))
		recs = recs[n:]
	}
	return first, nil
}
