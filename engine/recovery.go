package engine

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
	"golang.org/x/sys/unix"
)

// RecoveryReport is what Open found on the disks: every partition it
// recovered and every one it lost, for the manager agent (the worker wiring
// converts it into the manager's API at registration).
type RecoveryReport struct {
	WorkerID   layout.ID
	Disks      []DiskRecovery
	Partitions []RecoveredPartition
	Lost       []LostPartition
	Duration   time.Duration
}

// DiskRecovery is the recovery of one disk.
type DiskRecovery struct {
	ID    layout.ID
	Path  string
	Type  DiskType
	State DiskState
	// Err is why the disk could not be recovered (it is then failed).
	Err error
	// New: the disk was empty and got its identity now.
	New bool
	// Committed partitions found.
	Maps, ReducesOpen, ReducesFinalized int
	Lost                                int
	// Removed counts uncommitted leftovers deleted, Quarantined those moved
	// to quarantine/ instead.
	Removed, Quarantined int
	// The commit log as found: its generation, valid records and the torn
	// bytes after them.
	LogGeneration uint64
	LogRecords    uint64
	LogTornBytes  int64
	// Where the time went: reading and replaying the log, walking and
	// checking the files, writing the compacted log.
	LogDuration, WalkDuration, CompactDuration time.Duration
	Duration                                   time.Duration
}

// RecoveredPartition is a partition recovered from a disk.
type RecoveredPartition struct {
	Partition PartitionRef
	Disk      layout.ID
	// Bytes is the file's length.
	Bytes int64
	// Finalized: a ReducePartition with its attempt table, readable. Its
	// committed attempts are in the file and read when it is opened.
	Finalized bool
	// Committed are the producer attempts of an open (unfinalized)
	// ReducePartition whose segments survived; LostMaps the producers whose
	// committed segments did not (they must run again). The partition stays
	// open for their reruns and is finalized later.
	Committed []layout.AttemptCommit
	LostMaps  []uint32
}

// LostPartition is a committed partition that recovery could not keep.
type LostPartition struct {
	Partition PartitionRef
	Disk      layout.ID
	Reason    string
	// LostMaps are the producers that had committed to a lost open
	// ReducePartition (nil for a finalized one: all of them).
	LostMaps []uint32
}

// diskRecovery collects one disk's results.
type diskRecovery struct {
	DiskRecovery
	parts []RecoveredPartition
	lost  []LostPartition
}

// recover rebuilds the disk's catalogue from its commit log and its files,
// removes what was never committed, recovers open ReducePartitions, and
// installs a compacted commit log. It reads no partition file except open
// ReducePartitions: committed files are checked by size here and verified
// against their recorded footer CRC when first opened.
func (d *Disk) recover(rep *diskRecovery) error {
	start := time.Now()
	defer func() { rep.Duration = time.Since(start) }()

	cat := layout.NewCatalog()
	hdr := layout.LogHeader{Disk: d.ID()}
	logBytes, err := d.readWhole(layout.CommitLogFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("engine: reading the commit log of %s: %w", d.path, err)
	default:
		var end layout.LogEnd
		cat, hdr, end, err = layout.ReplayLog(logBytes)
		if err != nil {
			return fmt.Errorf("engine: commit log of %s: %w", d.path, err)
		}
		if hdr.Disk != d.ID() {
			return fmt.Errorf("engine: the commit log of %s belongs to disk %v, the disk is %v", d.path, hdr.Disk, d.ID())
		}
		rep.LogGeneration, rep.LogRecords, rep.LogTornBytes = hdr.Generation, end.Records, end.TornBytes
		hdr.FirstLSN += end.Records
	}
	logBytes = nil
	rep.LogDuration = time.Since(start)
	walkStart := time.Now()

	// The engine's own temporary files are never data.
	for _, name := range []string{logTempFile, identityTemp, probeFile} {
		if err := os.Remove(d.abs(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("engine: %w", err)
		}
	}

	seenMaps := make(map[layout.MapKey]bool, len(cat.Maps))
	seenReduces := make(map[layout.ReduceKey]bool, len(cat.Reduces))
	if err := d.walk(cat, seenMaps, seenReduces, rep); err != nil {
		return err
	}
	// Records whose files are missing: lost.
	for k := range cat.Maps {
		if !seenMaps[k] {
			rep.lost = append(rep.lost, LostPartition{Partition: mapRef(k), Disk: d.ID(), Reason: "file missing"})
			delete(cat.Maps, k)
		}
	}
	for k, st := range cat.Reduces {
		if seenReduces[k] {
			continue
		}
		if !st.Finalized && st.MapCount != 0 && len(st.Commits) > 0 {
			// Committed before its file was created (in the background).
			rp, lost, err := d.recreateReduce(k, st, k.Path(), nil)
			if err == nil {
				d.reduces[k] = rp
				rep.parts = append(rep.parts, RecoveredPartition{Partition: reduceRef(k), Disk: d.ID(), Bytes: rp.s.length, LostMaps: lost})
				continue
			}
			if classify(err) == faultFailed {
				return err
			}
			d.log.Warn("engine: recreating a committed ReducePartition", "partition", reduceRef(k), "err", err)
		}
		lp := LostPartition{Partition: reduceRef(k), Disk: d.ID(), Reason: "file missing"}
		if !st.Finalized {
			lp.LostMaps = commitMaps(st.Commits)
		}
		rep.lost = append(rep.lost, lp)
		delete(cat.Reduces, k)
	}
	rep.Lost = len(rep.lost)
	rep.WalkDuration = time.Since(walkStart)
	compactStart := time.Now()

	// A compacted log of the live state, with the lost partitions and maps
	// gone and open partitions' lengths as truncated: the next appends
	// follow it. Always written: it costs a few MiB for 100,000 partitions
	// and leaves no torn tail or dead records behind.
	hdr.Generation++
	content, next, err := cat.AppendSnapshot(nil, hdr)
	if err != nil {
		return err
	}
	if d.clog, err = newCommitLog(d); err != nil {
		return err
	}
	if err := d.clog.install(content, next); err != nil {
		return err
	}
	rep.CompactDuration = time.Since(compactStart)
	d.collectReport(rep)
	return nil
}

func commitMaps(cs []layout.AttemptCommit) []uint32 {
	out := make([]uint32, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Map)
	}
	return out
}

// walk goes through data/<job>/<dataset>/, keeps the files the catalogue
// names (with their recorded size), recovers open ReducePartitions, and
// removes (or quarantines) everything else the engine wrote.
func (d *Disk) walk(cat *layout.Catalog, seenMaps map[layout.MapKey]bool, seenReduces map[layout.ReduceKey]bool, rep *diskRecovery) error {
	jobs, err := os.ReadDir(d.abs(layout.DataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	d.dirs[layout.DataDir] = true
	d.spreadJobs() // a disk written before the flag was set
	var scanBuf []byte
	for _, je := range jobs {
		if strings.HasPrefix(je.Name(), layout.InodeDirPrefix) && je.IsDir() {
			// Empty (inodes.go) unless someone else put files there.
			if err := os.Remove(d.abs(layout.DataDir + "/" + je.Name())); err != nil {
				d.log.Warn("engine: removing an inode directory", "dir", je.Name(), "err", err)
			}
			continue
		}
		job, err := layout.DecodeID(je.Name())
		if err != nil || !je.IsDir() {
			continue // not ours: left alone, as fsck reports it
		}
		jobRel := layout.DataDir + "/" + je.Name()
		sets, err := os.ReadDir(d.abs(jobRel))
		if err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		kept := 0
		for _, se := range sets {
			ds, err := layout.DecodeID(se.Name())
			if err != nil || !se.IsDir() {
				kept++
				continue
			}
			dsRel := jobRel + "/" + se.Name()
			n, err := d.walkDataset(cat, string(job), string(ds), dsRel, seenMaps, seenReduces, rep, &scanBuf)
			if err != nil {
				return err
			}
			if n > 0 {
				kept++
				d.dirs[dsRel] = true
			} else if err := unix.Rmdir(d.abs(dsRel)); err != nil && !errors.Is(err, unix.ENOTEMPTY) {
				return fmt.Errorf("engine: remove %s: %w", dsRel, err)
			} else if err != nil {
				kept++
			}
		}
		if kept > 0 {
			d.dirs[jobRel] = true
		} else if err := unix.Rmdir(d.abs(jobRel)); err != nil && !errors.Is(err, unix.ENOTEMPTY) {
			return fmt.Errorf("engine: remove %s: %w", jobRel, err)
		}
	}
	return nil
}

// walkDataset handles one dataset directory and returns how many entries
// remain in it.
func (d *Disk) walkDataset(cat *layout.Catalog, job, ds, rel string, seenMaps map[layout.MapKey]bool,
	seenReduces map[layout.ReduceKey]bool, rep *diskRecovery, scanBuf *[]byte) (int, error) {
	dir, err := os.Open(d.abs(rel))
	if err != nil {
		return 0, fmt.Errorf("engine: %w", err)
	}
	defer dir.Close()
	// Directory order: measured against sorting by inode number with
	// parallel stats, on a cold cache, it was as fast or faster (the
	// lookups follow the directory's blocks).
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("engine: read %s: %w", rel, err)
	}
	dirfd := int(dir.Fd())
	job, ds = d.internStr(job), d.internStr(ds)
	remain := 0
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return 0, fmt.Errorf("engine: stat %s/%s: %w", rel, name, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			remain++
			continue
		}
		size := st.Size
		if m, a, ok := parseMapName(name); ok {
			k := layout.MapKey{Job: job, Dataset: ds, Map: m, Attempt: a}
			mc, committed := cat.Maps[k]
			switch {
			case !committed:
			case mc.FileLength != size:
				rep.lost = append(rep.lost, LostPartition{Partition: mapRef(k), Disk: d.ID(),
					Reason: fmt.Sprintf("file has %d bytes, committed with %d", size, mc.FileLength)})
				delete(cat.Maps, k)
			default:
				seenMaps[k] = true
				d.maps[k] = &mapEntry{length: size, footerCRC: mc.FooterCRC}
				remain++
				continue
			}
		} else if r, ok := parseReduceName(name); ok {
			k := layout.ReduceKey{Job: job, Dataset: ds, Reduce: r}
			rs, known := cat.Reduces[k]
			switch {
			case !known:
			case rs.Finalized && rs.FileLength != size:
				rep.lost = append(rep.lost, LostPartition{Partition: reduceRef(k), Disk: d.ID(),
					Reason: fmt.Sprintf("file has %d bytes, finalized with %d", size, rs.FileLength)})
				delete(cat.Reduces, k)
			case rs.Finalized:
				seenReduces[k] = true
				d.reduces[k] = newFinalizedReduce(d, k, rs.FileLength, rs.FooterCRC)
				remain++
				continue
			default:
				if *scanBuf == nil {
					*scanBuf = alignedBytes(d.bufBytes, max(d.align.Memory, d.align.Offset, 1))
				}
				rp, lostMaps, err := d.recoverReduce(k, rs, rel+"/"+name, size, *scanBuf)
				if err != nil {
					if classify(err) == faultFailed {
						return 0, err
					}
					rep.lost = append(rep.lost, LostPartition{Partition: reduceRef(k), Disk: d.ID(),
						Reason: err.Error(), LostMaps: commitMaps(rs.Commits)})
					delete(cat.Reduces, k)
					break
				}
				seenReduces[k] = true
				d.reduces[k] = rp
				rep.parts = append(rep.parts, RecoveredPartition{Partition: reduceRef(k), Disk: d.ID(),
					Bytes: rp.s.length, Committed: slices.Clone(rp.sortedCommitsLocked()), LostMaps: lostMaps})
				remain++
				continue
			}
		} else {
			remain++ // not a name the engine writes: left alone
			continue
		}
		// Never committed, released, or lost: not served, removed.
		if err := d.discard(dirfd, rel, name, rep); err != nil {
			return 0, err
		}
	}
	return remain, nil
}

// discard removes a leftover file, or moves it to quarantine/.
func (d *Disk) discard(dirfd int, rel, name string, rep *diskRecovery) error {
	if d.cfg.Quarantine {
		qdir := d.abs(quarantineDir + "/" + rel)
		if err := os.MkdirAll(qdir, 0o755); err != nil {
			return fmt.Errorf("engine: quarantine: %w", err)
		}
		to := filepath.Join(qdir, name)
		if _, err := os.Lstat(to); err == nil {
			to += "." + strconv.FormatInt(time.Now().UnixNano(), 10)
		}
		if err := os.Rename(d.abs(rel+"/"+name), to); err != nil {
			return fmt.Errorf("engine: quarantine: %w", err)
		}
		rep.Quarantined++
		return nil
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("engine: remove %s/%s: %w", rel, name, err)
	}
	rep.Removed++
	return nil
}

// recoverReduce recovers an unfinalized ReducePartition: it scans the file's
// segments (CRCs checked, stopping at the first bad or torn one), truncates
// it there, and keeps the committed attempts whose seqs 0..n-1 all
// survived; the others are lost maps, reported so that exactly those
// producers run again. The partition reopens for appending.
func (d *Disk) recoverReduce(k layout.ReduceKey, rs *layout.ReduceState, rel string, size int64, buf []byte) (*ReducePartition, []uint32, error) {
	f, err := d.io.OpenFile(d.abs(rel), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("engine: open %s: %w", rel, err)
	}
	sc, err := scanReduce(d.io, f, size, buf, d.flushGranule(int64(max(f.Alignment().Offset, 1))))
	if err == nil && (string(sc.hdr.Job) != k.Job || string(sc.hdr.Dataset) != k.Dataset || sc.hdr.ReduceIndex != k.Reduce) {
		err = &layout.CorruptError{File: layout.KindReducePartition, Offset: 0,
			What: fmt.Sprintf("%s holds the partition of job %q dataset %q reduce %d", rel, sc.hdr.Job, sc.hdr.Dataset, sc.hdr.ReduceIndex)}
	}
	var ce *layout.CorruptError
	if err != nil && errors.As(err, &ce) && ce.Offset == 0 && rs.MapCount != 0 {
		// The header never reached the disk (it goes out with the
		// partition's first data): the commit records say what it was.
		return d.recreateReduce(k, rs, rel, f)
	}
	if err != nil {
		return nil, nil, errors.Join(err, f.Close())
	}
	var kept, lostCommits []layout.AttemptCommit
	var lost []uint32
	for _, c := range rs.Commits {
		st := sc.attempts[attemptKey(c.Map, c.Attempt)]
		if st.next == c.Segments && st.bytes == c.Bytes {
			kept = append(kept, c)
		} else {
			lost = append(lost, c.Map)
			lostCommits = append(lostCommits, c)
		}
	}
	if sc.valid != size {
		if err := f.Truncate(sc.valid); err != nil {
			return nil, nil, errors.Join(err, f.Close())
		}
	}
	// The catalogue now says what the compacted log will: the surviving
	// commits, recorded at the truncated length.
	rs.Commits = kept
	rs.DurableLength = sc.valid

	b, err := layout.ResumeReduceBuilder(&layout.ReduceSummary{Header: sc.hdr, HeaderCRC: sc.headerCRC,
		ValidLength: sc.valid, Segments: sc.segments, SegmentBytes: sc.segmentBytes})
	if err != nil {
		return nil, nil, errors.Join(err, f.Close())
	}
	rp := newOpenReduce(d, k, sc.hdr.MapCount, sc.hdr.Codec, f, b, 0)
	rp.s.resume(sc.valid, sc.tail)
	for key, st := range sc.attempts {
		st.state = attemptOpen
		rp.attempts.set(uint32(key>>32), uint32(key), st)
	}
	for _, c := range kept {
		st := rp.attempts.get(c.Map, c.Attempt)
		st.state = attemptCommitted
		rp.attempts.set(c.Map, c.Attempt, st)
	}
	rp.commits, rp.commitsSorted = kept, false
	// The segments of lost attempts stay in the file but are never served;
	// a rerun pushes as a new attempt.
	for _, c := range lostCommits {
		st := rp.attempts.get(c.Map, c.Attempt)
		st.state = attemptClosed
		rp.attempts.set(c.Map, c.Attempt, st)
	}
	rp.lostMaps = lost
	if sc.stop != nil {
		d.log.Info("engine: recovered an open ReducePartition", "file", rel, "valid", sc.valid, "size", size,
			"kept", len(kept), "lost_maps", len(lost), "tail", sc.stop)
	}
	return rp, lost, nil
}

// recreateReduce starts an open partition anew, from its commit records,
// when its file (f, or nil if it is missing) never got its header: the
// file is created in the background and the header goes out with the
// partition's first data, so a producer commit can be durable before
// either. None of its segments survived: every committed producer is lost,
// and the partition takes their reruns.
func (d *Disk) recreateReduce(k layout.ReduceKey, rs *layout.ReduceState, rel string, f *diskio.File) (*ReducePartition, []uint32, error) {
	if f == nil {
		var err error
		if f, err = d.createFile(rel, datasetKey{k.Job, k.Dataset}); err != nil {
			return nil, nil, err
		}
	}
	fail := func(err error) (*ReducePartition, []uint32, error) { return nil, nil, errors.Join(err, f.Close()) }
	h := layout.ReduceHeader{Job: []byte(k.Job), Dataset: []byte(k.Dataset), ReduceIndex: k.Reduce, MapCount: rs.MapCount, Codec: rs.Codec}
	b, err := layout.NewReduceBuilder(&h)
	if err != nil {
		return fail(err)
	}
	hdr, err := b.AppendHeader(nil)
	if err != nil {
		return fail(err)
	}
	if err := d.writeFileWhole(f, hdr); err != nil {
		return fail(err)
	}
	lost := commitMaps(rs.Commits)
	rs.Commits, rs.DurableLength = nil, int64(len(hdr))
	rp := newOpenReduce(d, k, rs.MapCount, rs.Codec, f, b, 0)
	rp.s.resume(int64(len(hdr)), hdr[alignDown(int64(len(hdr)), rp.s.gran):])
	rp.lostMaps = lost
	d.log.Info("engine: recreated an open ReducePartition whose header was not on disk", "file", rel, "lost_maps", len(lost))
	return rp, lost, nil
}

// collectReport fills the counts of the recovery report and the list of
// recovered partitions (open ReducePartitions are listed by walk).
func (d *Disk) collectReport(rep *diskRecovery) {
	for k, e := range d.maps {
		rep.parts = append(rep.parts, RecoveredPartition{Partition: mapRef(k), Disk: d.ID(), Bytes: e.length})
	}
	rep.Maps = len(d.maps)
	for k, rp := range d.reduces {
		if rp.isFinalized() {
			rep.ReducesFinalized++
			rep.parts = append(rep.parts, RecoveredPartition{Partition: reduceRef(k), Disk: d.ID(), Bytes: rp.length, Finalized: true})
		} else {
			rep.ReducesOpen++
		}
	}
	slices.SortFunc(rep.parts, func(a, b RecoveredPartition) int { return comparePartitions(a.Partition, b.Partition) })
}

func comparePartitions(a, b PartitionRef) int {
	return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.Dataset, b.Dataset), cmp.Compare(a.Kind, b.Kind),
		cmp.Compare(a.Index, b.Index), cmp.Compare(a.Attempt, b.Attempt))
}

// parseMapName parses "map-<map>-<attempt>".
func parseMapName(name string) (uint32, uint32, bool) {
	rest, ok := strings.CutPrefix(name, "map-")
	if !ok {
		return 0, 0, false
	}
	m, a, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, 0, false
	}
	mi, ok1 := parseIndex(m)
	ai, ok2 := parseIndex(a)
	return mi, ai, ok1 && ok2
}

// parseReduceName parses "reduce-<reduce>".
func parseReduceName(name string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, "reduce-")
	if !ok {
		return 0, false
	}
	return parseIndex(rest)
}

// parseIndex parses a canonical decimal uint32 (no sign, no leading zeros),
// as the layout's path helpers write them.
func parseIndex(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, false
	}
	return uint32(n), true
}
