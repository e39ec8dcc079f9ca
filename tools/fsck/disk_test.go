package fsck

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/layout"
)

// testDisk builds a worker's disk directory with layout's builders: real
// files and a real commit log.
type testDisk struct {
	t    testing.TB
	dir  string
	id   layout.DiskIdentity
	recs []layout.Record
	rng  *rand.Rand
}

func newTestDisk(t testing.TB, dir string, seed uint64) *testDisk {
	t.Helper()
	d := &testDisk{t: t, dir: dir, rng: rand.New(rand.NewPCG(seed, 7))}
	for i := range d.id.Disk {
		d.id.Disk[i] = byte(d.rng.Uint32()) | 1
		d.id.Worker[i] = byte(d.rng.Uint32()) | 2
	}
	d.id.Created = time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	b, err := layout.AppendDiskIdentity(nil, &d.id)
	must(t, err)
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, layout.DiskIdentityFile), b, 0o644))
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mapFile is a MapPartition written to a disk, with where its structures
// are, for tests that damage them.
type mapFile struct {
	rel      string
	bytes    []byte
	footer   layout.MapFooter
	payloads []int64 // file offsets of buffer payloads
	indexes  []int64 // file offsets of each region's first index block
	key      layout.MapKey
}

// writeMap writes a MapPartition of the given regions (each with buffers of
// bufBytes spread over the subpartitions in order) and returns it.
func (d *testDisk) writeMap(job, ds string, m, a uint32, regions, buffersPerRegion, bufBytes int) *mapFile {
	t := d.t
	t.Helper()
	const subs = 64
	h := &layout.MapHeader{Job: []byte(job), Dataset: []byte(ds), MapIndex: m, Attempt: a, SubpartitionCount: subs, Codec: layout.CodecNone}
	b, err := layout.NewMapBuilder(h)
	must(t, err)
	mf := &mapFile{key: layout.MapKey{Job: job, Dataset: ds, Map: m, Attempt: a}}
	file, err := b.AppendHeader(nil)
	must(t, err)
	payload := make([]byte, bufBytes)
	for range regions {
		must(t, b.StartRegion(false))
		for i := range buffersPerRegion {
			for j := range payload {
				payload[j] = byte(d.rng.Uint32())
			}
			sub := uint32(i * subs / buffersPerRegion)
			bh := layout.BufferHeader{Subpartition: sub, Codec: layout.CodecNone, PayloadLength: uint32(len(payload)),
				UncompressedLength: uint32(len(payload)), PayloadCRC: layout.Checksum(payload)}
			file, err = b.AddBuffer(file, &bh)
			must(t, err)
			var hdr [layout.BufferHeaderSize]byte
			must(t, layout.PutBufferHeader(hdr[:], &bh))
			file = append(file, hdr[:]...)
			mf.payloads = append(mf.payloads, int64(len(file)))
			file = append(file, payload...)
		}
		mf.indexes = append(mf.indexes, int64(len(file)))
		file, err = b.FinishRegion(file)
		must(t, err)
	}
	file, mf.footer, err = b.Finish(file)
	must(t, err)
	mf.bytes = file
	mf.rel = mf.key.Path()
	d.write(mf.rel, file)
	return mf
}

func (d *testDisk) write(rel string, b []byte) {
	d.t.Helper()
	p := filepath.Join(d.dir, filepath.FromSlash(rel))
	must(d.t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(d.t, os.WriteFile(p, b, 0o644))
}

func (d *testDisk) commitMap(mf *mapFile) {
	d.recs = append(d.recs, layout.Record{Kind: layout.RecordMapCommitted, Job: []byte(mf.key.Job), Dataset: []byte(mf.key.Dataset),
		Index: mf.key.Map, Attempt: mf.key.Attempt, FileLength: mf.footer.FileLength, FooterCRC: mf.footer.CRC})
}

// reduceFile is a ReducePartition written to a disk.
type reduceFile struct {
	rel      string
	bytes    []byte
	key      layout.ReduceKey
	payloads []int64
	commits  []layout.AttemptCommit
	footer   layout.ReduceFooter
}

// writeReduce writes a ReducePartition with segsPerMap segments from each
// of maps producers (attempt 0), and, when finalize is set, its attempt
// table and footer.
func (d *testDisk) writeReduce(job, ds string, r uint32, maps, segsPerMap, segBytes int, finalize bool) *reduceFile {
	t := d.t
	t.Helper()
	h := &layout.ReduceHeader{Job: []byte(job), Dataset: []byte(ds), ReduceIndex: r, MapCount: uint32(maps), Codec: layout.CodecNone}
	b, err := layout.NewReduceBuilder(h)
	must(t, err)
	rf := &reduceFile{key: layout.ReduceKey{Job: job, Dataset: ds, Reduce: r}}
	file, err := b.AppendHeader(nil)
	must(t, err)
	payload := make([]byte, segBytes)
	for m := range maps {
		c := layout.AttemptCommit{Map: uint32(m), Attempt: 0}
		for seq := range segsPerMap {
			for j := range payload {
				payload[j] = byte(d.rng.Uint32())
			}
			sh := layout.SegmentHeader{Map: uint32(m), Attempt: 0, Seq: uint32(seq), Codec: layout.CodecNone,
				PayloadLength: uint32(len(payload)), UncompressedLength: uint32(len(payload)), PayloadCRC: layout.Checksum(payload)}
			must(t, b.AddSegment(&sh))
			var hdr [layout.SegmentHeaderSize]byte
			must(t, layout.PutSegmentHeader(hdr[:], &sh))
			file = append(file, hdr[:]...)
			rf.payloads = append(rf.payloads, int64(len(file)))
			file = append(file, payload...)
			c.Segments++
			c.Bytes += uint64(len(payload))
		}
		rf.commits = append(rf.commits, c)
	}
	if finalize {
		file, rf.footer, err = b.Finalize(file, rf.commits)
		must(t, err)
	}
	rf.bytes = file
	rf.rel = rf.key.Path()
	d.write(rf.rel, file)
	return rf
}

// commitReduce records every producer's commit of rf, at the file's
// length; and its finalize when the file is finalized.
func (d *testDisk) commitReduce(rf *reduceFile, finalized bool) {
	k := rf.key
	durable := int64(len(rf.bytes))
	if rf.footer.FileLength > 0 {
		durable = rf.footer.TableOffset // the segments end there
	}
	for _, c := range rf.commits {
		d.recs = append(d.recs, layout.Record{Kind: layout.RecordReduceCommitted, Job: []byte(k.Job), Dataset: []byte(k.Dataset),
			Index: k.Reduce, Map: c.Map, Attempt: c.Attempt, Segments: c.Segments, Bytes: c.Bytes, FileLength: durable})
	}
	if finalized {
		d.recs = append(d.recs, layout.Record{Kind: layout.RecordReduceFinalized, Job: []byte(k.Job), Dataset: []byte(k.Dataset),
			Index: k.Reduce, FileLength: rf.footer.FileLength, FooterCRC: rf.footer.CRC})
	}
}

// writeLog writes the commit log: a header and every record so far, each
// its own group-commit write, followed by the given tail bytes.
func (d *testDisk) writeLog(tail []byte) []byte {
	d.t.Helper()
	h := layout.LogHeader{Disk: d.id.Disk, FirstLSN: 1}
	b, err := layout.AppendLogHeader(nil, &h)
	must(d.t, err)
	for i := range d.recs {
		r := d.recs[i]
		r.LSN, r.BatchPos = h.FirstLSN+uint64(i), 0
		b, err = layout.AppendRecord(b, &r)
		must(d.t, err)
	}
	b = append(b, tail...)
	must(d.t, os.WriteFile(filepath.Join(d.dir, layout.CommitLogFile), b, 0o644))
	return b
}

// flipBit flips one bit of the file rel at off.
func flipBit(t testing.TB, dir, rel string, off int64, bit uint8) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	b, err := os.ReadFile(p)
	must(t, err)
	b[off] ^= 1 << bit
	must(t, os.WriteFile(p, b, 0o644))
}

func truncateFile(t testing.TB, dir, rel string, n int64) {
	t.Helper()
	must(t, os.Truncate(filepath.Join(dir, filepath.FromSlash(rel)), n))
}

// expectation is what fsck must say about one file.
type expectation struct {
	status Status
	// offset, when set, is where the damage must be reported, and flip
	// whether a single flipped bit must explain it.
	offset    *int64
	flipAt    *int64
	truncated bool
	what      string // a substring of What
}

// mixedDisk builds the disk the issue asks for: good, corrupt (a flipped
// bit in a payload, in an index block, in a footer; a truncated file; a
// file that contradicts its record), incomplete and missing partitions, and
// files that are not partitions. It returns what fsck must say of each
// path relative to the disk.
func mixedDisk(t testing.TB, dir string) (*testDisk, map[string]expectation) {
	d := newTestDisk(t, dir, 1)
	want := make(map[string]expectation)
	ok := expectation{status: StatusOK}

	// Good ones: several chunks long at a 4 KiB read size.
	good := d.writeMap("job-a", "ds-1", 0, 0, 3, 16, 1500)
	d.commitMap(good)
	want[good.rel] = ok
	goodReduce := d.writeReduce("job-a", "ds-2", 0, 3, 4, 700, true)
	d.commitReduce(goodReduce, true)
	want[goodReduce.rel] = ok
	openReduce := d.writeReduce("job-a", "ds-2", 1, 2, 3, 300, false)
	d.commitReduce(openReduce, false)
	want[openReduce.rel] = ok

	// A flipped bit in a payload.
	payload := d.writeMap("job-a", "ds-1", 1, 0, 2, 8, 1000)
	d.commitMap(payload)
	at := payload.payloads[5] + 123
	flipBit(t, dir, payload.rel, at, 3)
	want[payload.rel] = expectation{status: StatusCorrupt, offset: ptr(payload.payloads[5]), flipAt: ptr(at), what: "buffer payload CRC"}

	// A flipped bit in an index block.
	index := d.writeMap("job-a", "ds-1", 2, 0, 2, 8, 1000)
	d.commitMap(index)
	at = index.indexes[1] + 20
	flipBit(t, dir, index.rel, at, 6)
	want[index.rel] = expectation{status: StatusCorrupt, offset: ptr(index.indexes[1]), flipAt: ptr(at), what: "index block"}

	// A flipped bit in the footer.
	footer := d.writeMap("job-a", "ds-1", 3, 0, 2, 8, 1000)
	d.commitMap(footer)
	at = footer.footer.FileLength - 30
	flipBit(t, dir, footer.rel, at, 0)
	want[footer.rel] = expectation{status: StatusCorrupt, offset: ptr(footer.footer.FileLength - layout.MapFooterSize), flipAt: ptr(at), what: "footer"}

	// A truncated file.
	trunc := d.writeMap("job-a", "ds-1", 4, 0, 2, 8, 1000)
	d.commitMap(trunc)
	truncateFile(t, dir, trunc.rel, trunc.footer.FileLength/2)
	want[trunc.rel] = expectation{status: StatusCorrupt, truncated: true}

	// A whole, valid file that is not what was committed (a stale attempt
	// rewritten): its footer CRC differs from the record.
	stale := d.writeMap("job-a", "ds-1", 5, 0, 1, 4, 1000)
	rec := stale.footer
	rec.CRC ^= 0x5a5a
	d.recs = append(d.recs, layout.Record{Kind: layout.RecordMapCommitted, Job: []byte("job-a"), Dataset: []byte("ds-1"),
		Index: 5, FileLength: rec.FileLength, FooterCRC: rec.CRC})
	want[stale.rel] = expectation{status: StatusCorrupt, what: "committed with"}

	// A finalized ReducePartition with a flipped bit in a segment.
	badReduce := d.writeReduce("job-b", "ds-3", 7, 2, 3, 400, true)
	d.commitReduce(badReduce, true)
	at = badReduce.payloads[4] + 9
	flipBit(t, dir, badReduce.rel, at, 1)
	want[badReduce.rel] = expectation{status: StatusCorrupt, offset: ptr(badReduce.payloads[4]), flipAt: ptr(at), what: "segment payload CRC"}

	// Never committed: whole, and cut short by a crash.
	inc := d.writeMap("job-b", "ds-3", 9, 1, 1, 4, 500)
	want[inc.rel] = expectation{status: StatusIncomplete, what: "never committed"}
	half := d.writeMap("job-b", "ds-3", 10, 0, 2, 4, 500)
	truncateFile(t, dir, half.rel, 3000)
	want[half.rel] = expectation{status: StatusIncomplete, what: "never committed"}

	// Committed, and the files are gone.
	gone := d.writeMap("job-c", "ds-4", 0, 2, 1, 2, 100)
	d.commitMap(gone)
	must(t, os.Remove(filepath.Join(dir, filepath.FromSlash(gone.rel))))
	want[gone.rel] = expectation{status: StatusCorrupt, what: "missing"}
	goneReduce := d.writeReduce("job-c", "ds-4", 3, 1, 1, 100, true)
	d.commitReduce(goneReduce, true)
	must(t, os.Remove(filepath.Join(dir, filepath.FromSlash(goneReduce.rel))))
	want[goneReduce.rel] = expectation{status: StatusCorrupt, what: "missing"}

	// Not partitions: a stray file is listed, the engine's quarantine is not.
	d.write("data/stray.tmp", []byte("hello"))
	want["data/stray.tmp"] = expectation{status: StatusOther}
	d.write("quarantine/data/x/y/map-1-0", []byte("moved aside by the engine"))

	d.writeLog(nil)
	want[layout.DiskIdentityFile] = ok
	want[layout.CommitLogFile] = ok
	return d, want
}

// cleanDisk builds a disk where every file is good.
func cleanDisk(t testing.TB, dir string) map[string]expectation {
	d := newTestDisk(t, dir, 2)
	want := map[string]expectation{layout.DiskIdentityFile: {status: StatusOK}, layout.CommitLogFile: {status: StatusOK}}
	for m := range uint32(4) {
		mf := d.writeMap("clean", "ds", m, 0, 2, 10, 2000)
		d.commitMap(mf)
		want[mf.rel] = expectation{status: StatusOK}
	}
	rf := d.writeReduce("clean", "ds", 0, 4, 2, 900, true)
	d.commitReduce(rf, true)
	want[rf.rel] = expectation{status: StatusOK}
	d.writeLog(nil)
	return want
}
