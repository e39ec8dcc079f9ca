package fsck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/sluice-shuffle/sluice/layout"
)

// RestoreResult is what Restore did for one quarantined partition.
type RestoreResult struct {
	Type string `json:"type"` // "restore"
	Disk string `json:"disk"`
	File string `json:"file"`
	// MovedBack: the file went back from From to its place on the disk.
	From      string `json:"from,omitempty"`
	MovedBack bool   `json:"moved_back"`
	// Recommitted: its commit records were appended to the disk's log
	// again, the first at LSN.
	Recommitted bool   `json:"recommitted"`
	LSN         uint64 `json:"lsn,omitempty"`
	Error       string `json:"error,omitempty"`
}

// quarantined is the state of one partition in a manifest.
type quarantined struct {
	moved, released *ManifestEntry
}

// Restore undoes the quarantine recorded in the manifest of qdir: it moves
// every quarantined file back to its place on its disk and appends its
// commit records to the disk's log again, so the disk is as it was before
// (a second fsck then reports the partitions as it did the first time).
// With only set, it restores only the partitions whose original or
// quarantined path is in it. It reports one result per partition and
// returns how many failed.
func Restore(qdir string, only []string, report func(*RestoreResult)) (failed int, err error) {
	entries, err := readManifest(qdir)
	if err != nil {
		return 0, fmt.Errorf("fsck: reading the quarantine manifest: %w", err)
	}
	type key struct{ disk, file string }
	state := make(map[key]*quarantined)
	var order []key
	for i := range entries {
		m := &entries[i]
		k := key{m.Disk, m.File}
		st := state[k]
		if st == nil {
			st = &quarantined{}
			state[k] = st
			order = append(order, k)
		}
		switch m.Action {
		case ActionMoved:
			st.moved = m
		case ActionReleased:
			st.released = m
		case ActionRestored:
			*st = quarantined{}
		}
	}
	wanted := func(k key, st *quarantined) bool {
		if st.moved == nil && st.released == nil {
			return false
		}
		if len(only) == 0 {
			return true
		}
		for _, p := range only {
			abs, err := filepath.Abs(p)
			if err != nil {
				continue
			}
			if abs == filepath.Join(k.disk, filepath.FromSlash(k.file)) || (st.moved != nil && abs == st.moved.To) {
				return true
			}
		}
		return false
	}
	byDisk := make(map[string][]key)
	var disks []string
	for _, k := range order {
		if !wanted(k, state[k]) {
			continue
		}
		if _, ok := byDisk[k.disk]; !ok {
			disks = append(disks, k.disk)
		}
		byDisk[k.disk] = append(byDisk[k.disk], k)
	}
	for _, dir := range disks {
		var results []*RestoreResult
		var sts []*quarantined
		for _, k := range byDisk[dir] {
			results = append(results, &RestoreResult{Type: "restore", Disk: k.disk, File: k.file})
			sts = append(sts, state[k])
		}
		restoreDisk(qdir, dir, sts, results)
		for _, r := range results {
			if r.Error != "" {
				failed++
			}
			report(r)
		}
	}
	return failed, nil
}

// restoreDisk restores the partitions sts of one disk, under its lock.
func restoreDisk(qdir, dir string, sts []*quarantined, results []*RestoreResult) {
	fail := func(err error) {
		for _, r := range results {
			if r.Error == "" {
				r.Error = err.Error()
			}
		}
	}
	fd, err := lockDisk(dir)
	if err != nil {
		fail(err)
		return
	}
	defer func() {
		if err := unlockDisk(fd); err != nil {
			fail(err)
		}
	}()
	idBytes, err := os.ReadFile(filepath.Join(dir, layout.DiskIdentityFile))
	if err != nil {
		fail(err)
		return
	}
	id, _, err := layout.DecodeDiskIdentity(idBytes)
	if err != nil {
		fail(err)
		return
	}
	logPath := filepath.Join(dir, layout.CommitLogFile)
	logBytes, err := os.ReadFile(logPath)
	if err != nil {
		fail(err)
		return
	}
	cat, hdr, end, err := layout.ReplayLog(logBytes)
	if err != nil {
		fail(fmt.Errorf("the disk's commit log: %w", err))
		return
	}

	var recs []layout.Record
	type pending struct {
		r     *RestoreResult
		first int // index of its first record in recs
	}
	var recommit []pending
	for i, st := range sts {
		r := results[i]
		any := st.released
		if any == nil {
			any = st.moved
		}
		if any.DiskID != id.Disk.String() {
			r.Error = fmt.Sprintf("the disk at %s is now disk %v, not %s", dir, id.Disk, any.DiskID)
			continue
		}
		if m := st.moved; m != nil {
			r.From = m.To
			if err := moveBack(m); err != nil {
				r.Error = err.Error()
				continue
			}
			r.MovedBack = true
		}
		if st.released == nil {
			continue // the log still names it
		}
		add, err := recommitRecords(cat, st.released)
		if err != nil {
			r.Error = err.Error()
			continue
		}
		if len(add) > 0 {
			recommit = append(recommit, pending{r, len(recs)})
			recs = append(recs, add...)
		}
	}
	if len(recs) > 0 {
		first, err := appendToLog(logPath, hdr, end, recs)
		for _, p := range recommit {
			if err != nil {
				p.r.Error = "moved back, but its commit was not recorded again: " + err.Error()
				continue
			}
			p.r.Recommitted, p.r.LSN = true, first+uint64(p.first)
		}
	}
	for i, r := range results {
		if r.Error != "" || (!r.MovedBack && !r.Recommitted) {
			continue
		}
		st := sts[i]
		m := ManifestEntry{Time: time.Now().UTC(), Action: ActionRestored, Disk: r.Disk, DiskID: id.Disk.String(), File: r.File, LSN: r.LSN}
		if st.moved != nil {
			m.From, m.To = st.moved.To, st.moved.From
		}
		if err := appendManifest(qdir, &m); err != nil {
			r.Error = "restored, but not recorded in the manifest: " + err.Error()
		}
	}
}

// moveBack moves a quarantined file back to its place, unless it is back
// already (a restore that stopped after the move).
func moveBack(m *ManifestEntry) error {
	_, errTo := os.Lstat(m.To)
	_, errFrom := os.Lstat(m.From)
	switch {
	case errors.Is(errTo, os.ErrNotExist) && errFrom == nil:
		return nil
	case errTo != nil:
		return fmt.Errorf("the quarantined file: %w", errTo)
	case errFrom == nil:
		return fmt.Errorf("a file is at %s already; not overwriting it", m.From)
	case !errors.Is(errFrom, os.ErrNotExist):
		return errFrom
	}
	if err := mkdirAllSynced(filepath.Dir(m.From), m.Disk); err != nil {
		return err
	}
	return moveFile(m.To, m.From)
}

// recommitRecords returns the records that commit a released partition
// again as its manifest entry recorded it, or none if the log names it.
func recommitRecords(cat *layout.Catalog, m *ManifestEntry) ([]layout.Record, error) {
	pp := layout.ParsePath(m.File)
	switch {
	case pp.Kind == layout.PathMap && m.MapCommit != nil:
		k := pp.Map
		if _, live := cat.Maps[k]; live {
			return nil, nil
		}
		return []layout.Record{{Kind: layout.RecordMapCommitted, Job: []byte(k.Job), Dataset: []byte(k.Dataset), Index: k.Map, Attempt: k.Attempt,
			FileLength: m.MapCommit.FileLength, FooterCRC: m.MapCommit.FooterCRC}}, nil
	case pp.Kind == layout.PathReduce && m.ReduceCommit != nil:
		k, st := pp.Reduce, m.ReduceCommit
		if _, live := cat.Reduces[k]; live {
			return nil, nil
		}
		if st.Finalized {
			return []layout.Record{{Kind: layout.RecordReduceFinalized, Job: []byte(k.Job), Dataset: []byte(k.Dataset), Index: k.Reduce,
				FileLength: st.FileLength, FooterCRC: st.FooterCRC}}, nil
		}
		var recs []layout.Record
		for _, cm := range slices.Clone(st.Commits) {
			recs = append(recs, layout.Record{Kind: layout.RecordReduceCommitted, Job: []byte(k.Job), Dataset: []byte(k.Dataset), Index: k.Reduce,
				Map: cm.Map, Attempt: cm.Attempt, Segments: cm.Segments, Bytes: cm.Bytes, FileLength: st.DurableLength,
				MapCount: st.MapCount, Codec: st.Codec})
		}
		return recs, nil
	}
	return nil, fmt.Errorf("the manifest does not record the commit of %s", m.File)
}
