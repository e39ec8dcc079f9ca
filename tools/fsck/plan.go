package fsck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sluice-shuffle/sluice/layout"
)

// unit is what one argument expands to: a disk with all its files, or one
// file given alone (disk nil).
type unit struct {
	disk    *disk
	entries []*entry
}

// entry is one line of the report: a file to verify, or a verdict known
// without reading (a missing file, a stray name, a path error).
type entry struct {
	res    Result
	path   string // the file to read; "" when nothing is to be read
	disk   *disk
	parsed layout.ParsedPath
	done   chan struct{} // closed when res is final
}

func (e *entry) ready() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

func newEntry(res Result) *entry {
	res.Type = "file"
	return &entry{res: res, done: make(chan struct{})}
}

// finished returns an entry whose verdict needs no reading.
func finished(res Result) *entry {
	e := newEntry(res)
	close(e.done)
	return e
}

// disk is one disk directory being checked.
type disk struct {
	dir string // as given
	abs string
	// id is the disk's id from IDENTITY; idOK when it verified.
	id   layout.ID
	idOK bool
	// cat is the commit log's catalogue, nil when the log is missing,
	// corrupt, of a newer format, or of another disk: then every
	// partition's commit state is unknown.
	cat    *layout.Catalog
	logEnd layout.LogEnd
	logHdr layout.LogHeader
	// q is set while the disk is being quarantined.
	q *diskQuarantine
}

// plan expands the arguments into units: it stats every path, walks every
// disk, and reads and checks every disk's IDENTITY and COMMITLOG (which the
// verdicts on its partitions depend on).
func (c *checker) plan(ctx context.Context, paths []string) ([]*unit, error) {
	var units []*unit
	seen := make(map[string]bool)
	for _, p := range paths {
		clean := filepath.Clean(p)
		abs, err := filepath.Abs(clean)
		if err != nil {
			return nil, fmt.Errorf("fsck: %s: %w", p, err)
		}
		if seen[abs] {
			continue
		}
		seen[abs] = true
		st, err := os.Stat(clean)
		switch {
		case err != nil:
			units = append(units, &unit{entries: []*entry{finished(Result{Path: p, Kind: KindPath, Status: StatusError, What: errText(err)})}})
		case st.IsDir():
			u, err := c.planDisk(ctx, clean, abs)
			if err != nil {
				return nil, err
			}
			units = append(units, u)
		case st.Mode().IsRegular():
			e := newEntry(Result{Path: clean, Kind: kindOfName(filepath.Base(clean)), Size: st.Size()})
			e.path = clean
			c.prog.Add(st.Size())
			units = append(units, &unit{entries: []*entry{e}})
		default:
			units = append(units, &unit{entries: []*entry{finished(Result{Path: p, Kind: KindPath, Status: StatusError,
				What: fmt.Sprintf("neither a directory nor a regular file (%v)", st.Mode().Type())})}})
		}
	}
	return units, nil
}

// kindOfName guesses the kind of a file given alone from its name, until
// its magic says.
func kindOfName(name string) string {
	switch {
	case name == layout.DiskIdentityFile:
		return layout.KindDiskIdentity.String()
	case name == layout.CommitLogFile:
		return layout.KindCommitLog.String()
	case strings.HasPrefix(name, "map-"):
		return layout.KindMapPartition.String()
	case strings.HasPrefix(name, "reduce-"):
		return layout.KindReducePartition.String()
	}
	return KindOther
}

// isDisk reports whether dir looks like a disk directory.
func isDisk(dir string) bool {
	for _, name := range []string{layout.DiskIdentityFile, layout.CommitLogFile, layout.DataDir} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

func (c *checker) planDisk(ctx context.Context, dir, abs string) (*unit, error) {
	if !isDisk(dir) {
		return &unit{entries: []*entry{finished(Result{Path: dir, Kind: KindPath, Status: StatusError,
			What: fmt.Sprintf("not a Sluice disk directory: no %s, %s or %s/ in it", layout.DiskIdentityFile, layout.CommitLogFile, layout.DataDir)})}}, nil
	}
	if c.qdir != "" && (c.qdir == abs || strings.HasPrefix(c.qdir+"/", filepath.Join(abs, layout.DataDir)+"/")) {
		return nil, fmt.Errorf("fsck: the quarantine directory %s must not be the disk %s or inside its %s/ directory", c.opts.Quarantine, dir, layout.DataDir)
	}
	d := &disk{dir: dir, abs: abs}
	u := &unit{disk: d}
	base := Result{Disk: dir}
	at := func(rel string) Result {
		r := base
		r.File, r.Path = rel, filepath.Join(dir, filepath.FromSlash(rel))
		return r
	}

	// Walk first: the files present decide which commit records are
	// missing their file.
	var files []*entry
	present := make(map[string]bool)
	haveData := false
	// WalkDir does not follow a symbolic link, not even at the root; a
	// disk directory may well be one (/srv/sluice/disk0 -> /mnt/sdb).
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("fsck: %s: %w", dir, err)
	}
	walkErr := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		rel, rerr := filepath.Rel(root, p)
		if rerr != nil {
			return rerr
		}
		rel = filepath.ToSlash(rel)
		if err != nil {
			r := at(rel)
			r.Kind, r.Status, r.What = KindDisk, StatusError, errText(err)
			files = append(files, finished(r))
			if de != nil && de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if rel == "." {
			return nil
		}
		top := !strings.Contains(rel, "/")
		if de.IsDir() {
			// Only data/ holds Sluice files; quarantine/ (the engine's),
			// lost+found and the like are not partitions.
			if top && rel != layout.DataDir {
				return fs.SkipDir
			}
			return nil
		}
		if top && (rel == layout.DiskIdentityFile || rel == layout.CommitLogFile) {
			return nil
		}
		r := at(rel)
		info, err := de.Info()
		if err != nil {
			r.Kind, r.Status, r.What = KindOther, StatusError, errText(err)
			files = append(files, finished(r))
			return nil
		}
		r.Size = info.Size()
		pp := layout.ParsePath(rel)
		switch {
		case !info.Mode().IsRegular():
			r.Kind, r.Status, r.What = KindOther, StatusOther, fmt.Sprintf("not a regular file (%v); left alone", info.Mode().Type())
			files = append(files, finished(r))
		case pp.Kind == layout.PathMap || pp.Kind == layout.PathReduce:
			haveData = true
			present[rel] = true
			setIdentity(&r, pp)
			e := newEntry(r)
			e.path, e.disk, e.parsed = r.Path, d, pp
			files = append(files, e)
			c.prog.Add(r.Size)
		default:
			r.Kind, r.Status, r.What = KindOther, StatusOther, "not a Sluice file name; left alone"
			files = append(files, finished(r))
		}
		return nil
	})
	if walkErr != nil {
		return nil, fmt.Errorf("fsck: walking %s: %w", dir, walkErr)
	}

	u.entries = append(u.entries, c.checkIdentity(ctx, d, at(layout.DiskIdentityFile)))
	u.entries = append(u.entries, c.checkLog(ctx, d, at(layout.CommitLogFile), haveData)...)
	files = append(files, c.missing(d, present, at)...)
	slices.SortStableFunc(files, func(a, b *entry) int { return cmp.Compare(a.res.File, b.res.File) })
	u.entries = append(u.entries, files...)

	if c.qdir != "" {
		d.q = c.startQuarantine(d)
		c.locked = append(c.locked, d.q)
	}
	return u, nil
}

func setIdentity(r *Result, pp layout.ParsedPath) {
	switch pp.Kind {
	case layout.PathMap:
		r.Kind = layout.KindMapPartition.String()
		r.Job, r.Dataset = pp.Map.Job, pp.Map.Dataset
		r.Map, r.Attempt = ptr(pp.Map.Map), ptr(pp.Map.Attempt)
	case layout.PathReduce:
		r.Kind = layout.KindReducePartition.String()
		r.Job, r.Dataset = pp.Reduce.Job, pp.Reduce.Dataset
		r.Reduce = ptr(pp.Reduce.Reduce)
	}
}

func ptr[T any](v T) *T { return &v }

// checkIdentity reads and checks the disk's IDENTITY file.
func (c *checker) checkIdentity(ctx context.Context, d *disk, r Result) *entry {
	r.Kind = layout.KindDiskIdentity.String()
	b, err := c.meta.readAll(ctx, r.Path, layout.MaxHeaderSize)
	r.Size = int64(len(b))
	c.bytes.Add(int64(len(b)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			r.Status, r.What = StatusCorrupt, "missing: every disk a worker has used holds its identity"
			return finished(r)
		}
		setError(&r, err)
		return finished(r)
	}
	id, v, err := layout.DecodeDiskIdentity(b)
	if err != nil {
		setError(&r, err)
		return finished(r)
	}
	d.id, d.idOK = id.Disk, true
	r.Status = StatusOK
	r.Detail = fmt.Sprintf("format %v, disk %v, worker %v, created %s", v, id.Disk, id.Worker, id.Created.Format("2006-01-02 15:04:05Z07:00"))
	if other, dup := c.seenID[id.Disk]; dup {
		r.Status, r.Detail = StatusCorrupt, ""
		r.What = fmt.Sprintf("disk id %v is also the id of %s: a copied disk?", id.Disk, other)
		d.idOK = false
	}
	c.seenID[id.Disk] = d.dir
	return finished(r)
}

// maxLogBytes bounds the commit log fsck reads into memory (100,000
// partitions take a few MiB; layout refuses logs over 1 GiB).
const maxLogBytes = 1 << 30

// checkLog reads the disk's commit log and replays it into the catalogue the
// partitions are checked against.
func (c *checker) checkLog(ctx context.Context, d *disk, r Result, haveData bool) []*entry {
	r.Kind = layout.KindCommitLog.String()
	b, err := c.meta.readAll(ctx, r.Path, maxLogBytes)
	r.Size = int64(len(b))
	c.bytes.Add(int64(len(b)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if !haveData {
				// A disk without partitions needs no log yet.
				return nil
			}
			r.Status, r.What = StatusCorrupt, "missing: the partitions of this disk have no commit log (their commit state is unknown)"
			return []*entry{finished(r)}
		}
		setError(&r, err)
		return []*entry{finished(r)}
	}
	cat, hdr, end, err := layout.ReplayLog(b)
	if err != nil {
		setError(&r, err)
		if r.Status == StatusCorrupt {
			r.What += " (the partitions' commit state is unknown)"
		}
		return []*entry{finished(r)}
	}
	if d.idOK && hdr.Disk != d.id {
		// The disk id follows the file prefix (FORMAT.md, "Commit log").
		r.Status, r.Offset = StatusCorrupt, ptr(int64(layout.PrefixSize))
		r.What = fmt.Sprintf("the commit log belongs to disk %v, this is disk %v (IDENTITY)", hdr.Disk, d.id)
		return []*entry{finished(r)}
	}
	d.cat, d.logHdr, d.logEnd = cat, hdr, end
	r.Status = StatusOK
	r.Detail = fmt.Sprintf("generation %d, %d records; %d MapPartitions and %d ReducePartitions live", hdr.Generation, end.Records, len(cat.Maps), len(cat.Reduces))
	if end.Padding > 0 {
		r.Detail += fmt.Sprintf("; %d bytes of zero padding", end.Padding)
	}
	if end.TornBytes > 0 {
		r.Detail += fmt.Sprintf("; a torn last write of %d bytes is ignored (a crash cut it short; recovery truncates it)", end.TornBytes)
	}
	return []*entry{finished(r)}
}

// missing returns a CORRUPT entry for every partition the log commits whose
// file is not on the disk.
func (c *checker) missing(d *disk, present map[string]bool, at func(string) Result) []*entry {
	if d.cat == nil {
		return nil
	}
	var out []*entry
	for k, m := range d.cat.Maps {
		rel := k.Path()
		if present[rel] {
			continue
		}
		r := at(rel)
		setIdentity(&r, layout.ParsedPath{Kind: layout.PathMap, Map: k})
		r.Status, r.Commit = StatusCorrupt, CommitCommitted
		r.What = fmt.Sprintf("missing: committed at LSN %d with length %d and footer CRC %#x, and the file does not exist", m.LSN, m.FileLength, m.FooterCRC)
		e := finished(r)
		e.disk, e.parsed = d, layout.ParsedPath{Kind: layout.PathMap, Map: k}
		out = append(out, e)
	}
	for k, s := range d.cat.Reduces {
		rel := k.Path()
		if present[rel] {
			continue
		}
		r := at(rel)
		setIdentity(&r, layout.ParsedPath{Kind: layout.PathReduce, Reduce: k})
		r.Status, r.Commit = StatusCorrupt, CommitCommitted
		if s.Finalized {
			r.What = fmt.Sprintf("missing: finalized with length %d and footer CRC %#x, and the file does not exist", s.FileLength, s.FooterCRC)
		} else {
			r.What = fmt.Sprintf("missing: %d attempts committed up to length %d, and the file does not exist", len(s.Commits), s.DurableLength)
		}
		e := finished(r)
		e.disk, e.parsed = d, layout.ParsedPath{Kind: layout.PathReduce, Reduce: k}
		out = append(out, e)
	}
	return out
}

// errText is an error's message without the package prefixes of the IO
// layers, which say nothing to an operator.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// setError fills r from the error of checking it: a corruption, a newer
// format, or an IO error.
func setError(r *Result, err error) {
	var ce *layout.CorruptError
	var ve *layout.VersionError
	switch {
	case errors.As(err, &ce):
		r.Status = StatusCorrupt
		setCorrupt(r, ce)
	case errors.As(err, &ve):
		r.Status, r.What = StatusError, ve.Error()
	default:
		r.Status, r.What = StatusError, errText(err)
	}
}

// setCorrupt copies what a CorruptError says into r.
func setCorrupt(r *Result, ce *layout.CorruptError) {
	if ce.Offset >= 0 {
		r.Offset = ptr(ce.Offset)
	}
	r.What = ce.What
	if ce.HasValues {
		r.What += fmt.Sprintf(": expected %#x, found %#x", ce.Expected, ce.Actual)
	}
	r.Truncated = ce.Truncated
	if ce.Flip.Found {
		r.BitFlip = &BitFlip{Offset: ce.Flip.Offset, Bit: ce.Flip.Bit, InCRC: ce.Flip.InCRC}
	} else if ce.Flip.Searched {
		r.What += "; no single flipped bit explains it"
	}
}
