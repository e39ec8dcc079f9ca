package layout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The golden files of every released format version live in
// testdata/format/v<major>/ and must decode forever.
//
//	go test ./layout -update-golden   regenerates the files of the current major (v1)
//	go test ./layout -update          regenerates the describer outputs (*.txt)
//
// Regenerating the binary files of a released version is never right: they
// are the record of what older Sluice builds wrote. While the current major
// is 1, TestGoldenGenerator checks that the generator still writes them byte
// for byte, so an accidental format change fails here first.
var (
	updateGolden   = flag.Bool("update-golden", false, "rewrite the golden files of the current format major")
	updateDescribe = flag.Bool("update", false, "rewrite the expected describer outputs of the golden files")
)

const goldenDir = "../testdata/format/v1"

// goldenNames lists the golden files of format v1.
var goldenNames = []string{"mappartition.bin", "reducepartition.bin", "identity.bin", "commitlog.bin"}

// Two LZ4 blocks, checked with github.com/pierrec/lz4/v4 UncompressBlock
// when the golden files were made: the first decodes to
// "abcdabcdabcdabcdabcdXYZWV", the second to
// "shuffle shuffle shuffle shuffle shuffle!".
var (
	lz4Block1 = []byte{0x4c, 'a', 'b', 'c', 'd', 0x04, 0x00, 0x50, 'X', 'Y', 'Z', 'W', 'V'}
	lz4Block2 = []byte{0x88, 's', 'h', 'u', 'f', 'f', 'l', 'e', ' ', 0x08, 0x00, 0x00, 0x10, 0x00, 0x00, 0x10, 0x00, 0xc0,
		'f', 'l', 'e', ' ', 's', 'h', 'u', 'f', 'f', 'l', 'e', '!'}
)

var (
	goldenDisk    = ID{0x5d, 0x1c, 0x0e, 0x7a, 0x21, 0x44, 0x4b, 0x8f, 0x9a, 0x03, 0x66, 0xe1, 0x0b, 0xd2, 0x7c, 0x11}
	goldenWorker  = ID{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf}
	goldenCreated = time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	goldenJob     = []byte("wordcount-2026")
)

// payload describes one buffer or segment of a golden file.
type payload struct {
	codec        Codec
	flags        BufferFlags
	data         []byte
	uncompressed int
}

func raw(s string) payload { return payload{codec: CodecNone, data: []byte(s), uncompressed: len(s)} }

func lz4(b []byte, n int) payload { return payload{codec: CodecLZ4, data: b, uncompressed: n} }

func fallback(s string) payload {
	p := raw(s)
	p.flags = FlagRawFallback
	return p
}

type goldenBuffer struct {
	sub uint32
	p   payload
}

// goldenMap builds the MapPartition golden file: a dense region with an
// empty subpartition (4) and a subpartition of two buffers (1), a broadcast
// region, a sparse region, and a region without buffers (which leaves no
// trace).
func goldenMap(t testing.TB) ([]byte, MapFooter) {
	h := &MapHeader{Job: goldenJob, Dataset: []byte("ds-7"), MapIndex: 3, Attempt: 1, SubpartitionCount: 8, Codec: CodecLZ4}
	regions := []struct {
		broadcast bool
		buffers   []goldenBuffer
	}{
		{false, []goldenBuffer{
			{0, fallback("apple banana cherry")},
			{1, lz4(lz4Block1, 25)},
			{1, raw("one more for one")},
			{2, raw("two")},
			{3, raw("three")},
			{5, lz4(lz4Block2, 40)},
			{6, raw("six")},
			{7, raw("seven")},
		}},
		{true, []goldenBuffer{
			{AllSubpartitions, raw("broadcast record")},
			{AllSubpartitions, raw("EndOfData")},
		}},
		{false, nil},
		{false, []goldenBuffer{
			{1, raw("late one")},
			{6, raw("late six")},
		}},
	}
	return buildMap(t, h, func(add func(broadcast bool, bufs []goldenBuffer)) {
		for _, r := range regions {
			add(r.broadcast, r.buffers)
		}
	})
}

// buildMap writes a MapPartition file through a MapBuilder.
func buildMap(t testing.TB, h *MapHeader, regions func(add func(bool, []goldenBuffer))) ([]byte, MapFooter) {
	t.Helper()
	b, err := NewMapBuilder(h)
	must(t, err)
	file, err := b.AppendHeader(nil)
	must(t, err)
	regions(func(broadcast bool, bufs []goldenBuffer) {
		must(t, b.StartRegion(broadcast))
		for _, gb := range bufs {
			bh := BufferHeader{Subpartition: gb.sub, Codec: gb.p.codec, Flags: gb.p.flags,
				PayloadLength: uint32(len(gb.p.data)), UncompressedLength: uint32(gb.p.uncompressed), PayloadCRC: Checksum(gb.p.data)}
			file, err = b.AddBuffer(file, &bh)
			must(t, err)
			file = appendBuffer(t, file, &bh, gb.p.data)
		}
		file, err = b.FinishRegion(file)
		must(t, err)
	})
	file, f, err := b.Finish(file)
	must(t, err)
	if int64(len(file)) != f.FileLength || b.Offset() != f.FileLength {
		t.Fatalf("builder says %d bytes (offset %d), wrote %d", f.FileLength, b.Offset(), len(file))
	}
	return file, f
}

func appendBuffer(t testing.TB, dst []byte, h *BufferHeader, p []byte) []byte {
	var hb [BufferHeaderSize]byte
	must(t, PutBufferHeader(hb[:], h))
	return append(append(dst, hb[:]...), p...)
}

func appendSegment(t testing.TB, dst []byte, h *SegmentHeader, p []byte) []byte {
	var hb [SegmentHeaderSize]byte
	must(t, PutSegmentHeader(hb[:], h))
	return append(append(dst, hb[:]...), p...)
}

type goldenSegment struct {
	m, a, seq uint32
	p         payload
}

// goldenReduce builds the ReducePartition golden file: map 0 commits two
// segments, map 1's attempt 0 is aborted and attempt 1 commits two segments
// of which the second was pushed twice (a retry), map 2 commits one LZ4
// segment, map 3's attempt 1 left a segment but attempt 2 committed none.
// It also returns the file's length after each segment, for the commit log.
func goldenReduce(t testing.TB) ([]byte, ReduceFooter, []AttemptCommit, []int64) {
	h := &ReduceHeader{Job: goldenJob, Dataset: []byte("ds-8"), ReduceIndex: 5, MapCount: 4, Codec: CodecLZ4}
	segs := []goldenSegment{
		{0, 0, 0, raw("m0 first")},
		{1, 0, 0, raw("m1 attempt 0, aborted")},
		{0, 0, 1, lz4(lz4Block2, 40)},
		{1, 1, 0, raw("m1 retry")},
		{3, 1, 0, raw("m3 attempt 1, lost")},
		{1, 1, 1, raw("m1 second")},
		{1, 1, 1, raw("m1 second")},
		{2, 0, 0, fallback("m2 only")},
	}
	commits := []AttemptCommit{
		{Map: 0, Attempt: 0, Segments: 2, Bytes: 8 + uint64(len(lz4Block2))},
		{Map: 1, Attempt: 1, Segments: 2, Bytes: 8 + 9},
		{Map: 2, Attempt: 0, Segments: 1, Bytes: 7},
		{Map: 3, Attempt: 2, Segments: 0, Bytes: 0},
	}
	b, err := NewReduceBuilder(h)
	must(t, err)
	file, err := b.AppendHeader(nil)
	must(t, err)
	var lengths []int64
	for _, s := range segs {
		sh := SegmentHeader{Map: s.m, Attempt: s.a, Seq: s.seq, Codec: s.p.codec, Flags: s.p.flags,
			PayloadLength: uint32(len(s.p.data)), UncompressedLength: uint32(s.p.uncompressed), PayloadCRC: Checksum(s.p.data)}
		must(t, b.AddSegment(&sh))
		file = appendSegment(t, file, &sh, s.p.data)
		lengths = append(lengths, int64(len(file)))
	}
	file, f, err := b.Finalize(file, commits)
	must(t, err)
	if int64(len(file)) != f.FileLength {
		t.Fatalf("builder says %d bytes, wrote %d", f.FileLength, len(file))
	}
	return file, f, commits, lengths
}

func goldenIdentity(t testing.TB) []byte {
	b, err := AppendDiskIdentity(nil, &DiskIdentity{Disk: goldenDisk, Worker: goldenWorker, Created: goldenCreated})
	must(t, err)
	return b
}

// goldenLog builds the commit log golden file (commitlog-1.0.bin is the
// same log in format 1.0, without the reduce commits' map count and codec): a compacted log (generation
// 1) whose snapshot carries the golden MapPartition and map 0's commit to
// the golden ReducePartition, then a group commit of the other reduce
// commits, the reduce partition's finalization and the release of an older
// map attempt, then a group commit of one job release, then the zero padding
// of an O_DIRECT write.
func goldenLog(t testing.TB) []byte {
	_, mf := goldenMap(t)
	_, rf, commits, lengths := goldenReduce(t)
	ds7, ds8 := []byte("ds-7"), []byte("ds-8")
	reduceCommit := func(c AttemptCommit, length int64) Record {
		return Record{Kind: RecordReduceCommitted, Job: goldenJob, Dataset: ds8, Index: 5,
			Map: c.Map, Attempt: c.Attempt, Segments: c.Segments, Bytes: c.Bytes, FileLength: length,
			MapCount: 4, Codec: CodecLZ4} // the golden ReducePartition's header
	}
	batches := [][]Record{
		{
			{Kind: RecordMapCommitted, Job: goldenJob, Dataset: ds7, Index: 3, Attempt: 1, FileLength: mf.FileLength, FooterCRC: mf.CRC},
			reduceCommit(commits[0], lengths[2]),
			{Kind: RecordSnapshotEnd, Records: 2},
		},
		{
			reduceCommit(commits[1], lengths[6]),
			reduceCommit(commits[2], lengths[7]),
			reduceCommit(commits[3], lengths[7]),
			{Kind: RecordReduceFinalized, Job: goldenJob, Dataset: ds8, Index: 5, FileLength: rf.FileLength, FooterCRC: rf.CRC},
			{Kind: RecordReleased, Scope: ReleaseMap, Job: goldenJob, Dataset: ds7, Index: 3, Attempt: 0},
		},
		{
			{Kind: RecordReleased, Scope: ReleaseJob, Job: []byte("old-job")},
		},
	}
	log, err := AppendLogHeader(nil, &LogHeader{Disk: goldenDisk, Generation: 1, FirstLSN: 100})
	must(t, err)
	lsn := uint64(100)
	for _, batch := range batches {
		for i := range batch {
			batch[i].LSN, batch[i].BatchPos = lsn, uint16(i)
			lsn++
			log, err = AppendRecord(log, &batch[i])
			must(t, err)
		}
	}
	return append(log, make([]byte, 13)...)
}

func goldenFiles(t testing.TB) map[string][]byte {
	m, _ := goldenMap(t)
	r, _, _, _ := goldenReduce(t)
	return map[string][]byte{
		"mappartition.bin":    m,
		"reducepartition.bin": r,
		"identity.bin":        goldenIdentity(t),
		"commitlog.bin":       goldenLog(t),
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, name))
	must(t, err)
	return b
}

func TestGoldenGenerator(t *testing.T) {
	files := goldenFiles(t)
	if *updateGolden {
		must(t, os.MkdirAll(goldenDir, 0o755))
		for name, b := range files {
			must(t, os.WriteFile(filepath.Join(goldenDir, name), b, 0o644))
		}
	}
	if Current.Major() != 1 {
		t.Skip("v1 golden files are frozen; the generator writes the current major")
	}
	for _, name := range goldenNames {
		if got := readGolden(t, name); !bytes.Equal(got, files[name]) {
			t.Errorf("%s: the generator no longer writes the committed golden file (%d bytes vs %d): the v1 format changed", name, len(files[name]), len(got))
		}
	}
}

// TestGoldenDecode checks what each golden file holds, through the
// streaming verifier and the io.ReaderAt paths.
func TestGoldenDecode(t *testing.T) {
	t.Run("mappartition", func(t *testing.T) {
		b := readGolden(t, "mappartition.bin")
		s := verifyOK(t, b)
		m := s.Map
		if string(m.Header.Job) != "wordcount-2026" || m.Header.MapIndex != 3 || m.Header.Attempt != 1 || m.Header.SubpartitionCount != 8 {
			t.Errorf("header %+v", m.Header)
		}
		if m.Footer.Regions != 3 || m.BroadcastRegions != 1 || m.Footer.Buffers != 12 || m.DenseBlocks != 1 || m.SparseBlocks != 1 {
			t.Errorf("summary %+v", m)
		}
		p, err := OpenMapPartition(bytes.NewReader(b), int64(len(b)))
		must(t, err)
		// Subpartition 1: two buffers in region 0, the broadcast region,
		// one buffer in region 2.
		got := readRange(t, p, b, 1, 2)
		want := []string{"abcd", "one more for one", "broadcast record", "EndOfData", "late one"}
		if !equalPrefixes(got, want) {
			t.Errorf("subpartition 1 reads %q, want %q", got, want)
		}
		if got := readRange(t, p, b, 4, 5); !equalPrefixes(got, []string{"broadcast record", "EndOfData"}) {
			t.Errorf("empty subpartition 4 reads %q", got)
		}
	})
	t.Run("reducepartition", func(t *testing.T) {
		b := readGolden(t, "reducepartition.bin")
		s := verifyOK(t, b)
		r := s.Reduce
		if !r.Finalized || r.Footer.Segments != 8 || r.Footer.CommittedSegments != 5 || len(r.Commits) != 4 {
			t.Errorf("summary %+v", r)
		}
		p, err := OpenReducePartition(bytes.NewReader(b), int64(len(b)))
		must(t, err)
		served := serveReduce(t, p, b)
		want := []string{"m0 first", "shuffle", "m1 retry", "m1 second", "m2 only"}
		if !equalPrefixes(served, want) {
			t.Errorf("served %q, want %q", served, want)
		}
	})
	t.Run("identity", func(t *testing.T) {
		s := verifyOK(t, readGolden(t, "identity.bin"))
		if s.Disk.Identity.Disk != goldenDisk || s.Disk.Identity.Worker != goldenWorker || !s.Disk.Identity.Created.Equal(goldenCreated) {
			t.Errorf("identity %+v", s.Disk.Identity)
		}
	})
	t.Run("commitlog", func(t *testing.T) {
		b := readGolden(t, "commitlog.bin")
		s := verifyOK(t, b)
		l := s.Log
		if l.End.Records != 9 || l.End.Padding != 13 || l.End.TornBytes != 0 || l.ByKind[RecordReduceCommitted] != 4 {
			t.Errorf("summary %+v", l)
		}
		// The log's records name the golden partition files exactly.
		sc, err := NewLogScanner(b)
		must(t, err)
		m, r := readGolden(t, "mappartition.bin"), readGolden(t, "reducepartition.bin")
		mp, err := OpenMapPartition(bytes.NewReader(m), int64(len(m)))
		must(t, err)
		rp, err := OpenReducePartition(bytes.NewReader(r), int64(len(r)))
		must(t, err)
		var commits []AttemptCommit
		for sc.Next() {
			rec := sc.Record()
			switch rec.Kind {
			case RecordMapCommitted:
				if rec.FileLength != int64(len(m)) || rec.FooterCRC != mp.Footer.CRC || rec.Path() != "data/etnn4p33dtqmst1d68o34dg/chpiqdo/map-3-1" {
					t.Errorf("map commit %+v, path %s", rec, rec.Path())
				}
			case RecordReduceCommitted:
				commits = append(commits, rec.Commit())
			case RecordReduceFinalized:
				if rec.FileLength != int64(len(r)) || rec.FooterCRC != rp.Footer.CRC {
					t.Errorf("reduce finalize %+v", rec)
				}
			}
		}
		if fmt.Sprint(commits) != fmt.Sprint(rp.Commits) {
			t.Errorf("log commits %v, file commits %v", commits, rp.Commits)
		}
	})
}

func verifyOK(t testing.TB, b []byte) Summary {
	t.Helper()
	s, err := Verify(bytes.NewReader(b), nil, VerifyOptions{})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return s
}

// readRange returns the payload of every buffer a reader of [start, end)
// sends, checking each buffer as a consumer does.
func readRange(t testing.TB, p *MapPartition, file []byte, start, end uint32) []string {
	t.Helper()
	exts, _, err := p.Extents(bytes.NewReader(file), start, end, nil, nil)
	must(t, err)
	var out []string
	for _, e := range exts {
		b := file[e.Offset : e.Offset+e.Length]
		for len(b) > 0 {
			h, err := DecodeBufferHeader(b)
			must(t, err)
			must(t, h.CheckPayload(b[BufferHeaderSize:BufferHeaderSize+h.PayloadLength]))
			if h.Subpartition != AllSubpartitions && (h.Subpartition < start || h.Subpartition >= end) {
				t.Fatalf("extent %+v holds subpartition %d outside [%d, %d)", e, h.Subpartition, start, end)
			}
			out = append(out, string(b[BufferHeaderSize:BufferHeaderSize+h.PayloadLength]))
			b = b[BufferHeaderSize+h.PayloadLength:]
		}
	}
	return out
}

// serveReduce returns the payloads a reader of the ReducePartition serves.
func serveReduce(t testing.TB, p *ReducePartition, file []byte) []string {
	t.Helper()
	f, err := NewReduceFilter(p.Commits)
	must(t, err)
	var out []string
	for off := p.DataOffset; off < p.Footer.TableOffset; {
		h, err := DecodeSegmentHeader(file[off:])
		must(t, err)
		ok, err := f.Admit(&h, off)
		must(t, err)
		pay := file[off+SegmentHeaderSize : off+SegmentHeaderSize+int64(h.PayloadLength)]
		must(t, h.CheckPayload(pay))
		if ok {
			out = append(out, string(pay))
		}
		off += SegmentHeaderSize + int64(h.PayloadLength)
	}
	must(t, f.Check())
	return out
}

// equalPrefixes reports whether each got[i] holds want[i] (LZ4 payloads
// are recognised by their literal bytes).
func equalPrefixes(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.Contains(got[i], want[i]) {
			return false
		}
	}
	return true
}

func TestGoldenDescribe(t *testing.T) {
	for _, name := range goldenNames {
		t.Run(name, func(t *testing.T) {
			b := readGolden(t, name)
			var out bytes.Buffer
			must(t, Describe(&out, bytes.NewReader(b), int64(len(b)), DescribeOptions{}))
			path := filepath.Join(goldenDir, strings.TrimSuffix(name, ".bin")+".txt")
			if *updateDescribe {
				must(t, os.WriteFile(path, out.Bytes(), 0o644))
			}
			want, err := os.ReadFile(path)
			must(t, err)
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("Describe output differs from %s (go test ./layout -update rewrites it):\n%s", path, out.Bytes())
			}
		})
	}
}

// verifyChunked verifies b written in chunks of the given sizes, cycling.
func verifyChunked(b []byte, chunks ...int) (Summary, error) {
	v := NewVerifier(VerifyOptions{})
	for i := 0; len(b) > 0; i++ {
		n := min(chunks[i%len(chunks)], len(b))
		if _, err := v.Write(b[:n]); err != nil {
			return Summary{}, err
		}
		b = b[n:]
	}
	return v.Finish()
}

func TestGoldenChunked(t *testing.T) {
	for _, name := range goldenNames {
		b := readGolden(t, name)
		whole := verifyOK(t, b)
		for _, chunks := range [][]int{{1}, {2}, {3}, {7}, {13, 1, 64}, {24}, {31}, {4096}} {
			s, err := verifyChunked(b, chunks...)
			if err != nil {
				t.Fatalf("%s in chunks %v: %v", name, chunks, err)
			}
			if fmt.Sprint(s.Map, s.Reduce, s.Disk, s.Log) == "" || s.Kind != whole.Kind {
				t.Fatalf("%s in chunks %v: summary %+v", name, chunks, s)
			}
		}
	}
}

// logDetected reports whether a damaged commit log was noticed: an error, or
// a torn tail that drops records (a flip in the last group-commit write
// looks exactly like a write the crash cut short, and is ignored as one).
func logDetected(s Summary, err error, records uint64) bool {
	return err != nil || s.Log.End.TornBytes > 0 && s.Log.End.Records < records ||
		s.Log.End.TornBytes > 0 && s.Log.End.Padding == 0
}

// TestGoldenBitFlips flips every bit of every golden file: each flip must be
// found (never a panic, never a clean verify), and when the error says one
// flipped bit explains a checksum mismatch, it must name the right bit.
func TestGoldenBitFlips(t *testing.T) {
	for _, name := range goldenNames {
		t.Run(name, func(t *testing.T) {
			orig := readGolden(t, name)
			clean := verifyOK(t, orig)
			var explained, crcMismatches, torn int
			b := make([]byte, len(orig))
			for i := range orig {
				for bit := range 8 {
					copy(b, orig)
					b[i] ^= 1 << bit
					s, err := verifyChunked(b, 1+i%29, 4096)
					if clean.Kind == KindCommitLog {
						if err == nil && logDetected(s, err, clean.Log.End.Records) {
							torn++
							continue
						}
					}
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("flip of byte %d bit %d: err = %v", i, bit, err)
					}
					var ce *CorruptError
					if !errors.As(err, &ce) {
						t.Fatalf("flip of byte %d bit %d: %T is not a *CorruptError", i, bit, err)
					}
					if ce.Flip.Searched {
						crcMismatches++
					}
					if ce.Flip.Found {
						explained++
						if ce.Flip.Offset != int64(i) || ce.Flip.Bit != uint8(bit) {
							t.Fatalf("flip of byte %d bit %d explained as byte %d bit %d: %v", i, bit, ce.Flip.Offset, ce.Flip.Bit, err)
						}
					}
					if ce.Offset > int64(len(b)) {
						t.Fatalf("flip of byte %d bit %d: error offset %d beyond the file: %v", i, bit, ce.Offset, err)
					}
					checkOpenPaths(t, name, b, i)
				}
			}
			t.Logf("%s: %d flips, %d caught by a CRC (%d explained as one flipped bit), %d torn log tails",
				name, 8*len(orig), crcMismatches, explained, torn)
		})
	}
}

// checkOpenPaths runs the io.ReaderAt paths over a damaged file: they must
// not panic, and must refuse damage to what they read.
func checkOpenPaths(t *testing.T, name string, b []byte, flipped int) {
	r := bytes.NewReader(b)
	switch name {
	case "mappartition.bin":
		p, err := OpenMapPartition(r, int64(len(b)))
		if err != nil {
			return
		}
		if int64(flipped) >= p.Footer.DirectoryOffset || flipped < p.HeaderLength {
			t.Fatalf("flip of byte %d in header, directory or footer opened cleanly", flipped)
		}
		for start := range uint32(8) {
			for end := start + 1; end <= 9; end++ {
				_, _, _ = p.Extents(r, start, end, nil, nil)
			}
		}
	case "reducepartition.bin":
		p, err := OpenReducePartition(r, int64(len(b)))
		if err != nil {
			return
		}
		if int64(flipped) >= p.Footer.TableOffset || int64(flipped) < p.DataOffset {
			t.Fatalf("flip of byte %d in header, table or footer opened cleanly", flipped)
		}
	case "identity.bin":
		if _, _, err := DecodeDiskIdentity(b); err == nil {
			t.Fatalf("flip of byte %d decoded cleanly", flipped)
		}
	}
}

// TestGoldenTruncation cuts every golden file at every length.
func TestGoldenTruncation(t *testing.T) {
	for _, name := range goldenNames {
		t.Run(name, func(t *testing.T) {
			orig := readGolden(t, name)
			clean := verifyOK(t, orig)
			for n := range len(orig) {
				b := orig[:n]
				s, err := verifyChunked(b, 1+n%17, 512)
				if clean.Kind == KindCommitLog && n >= LogHeaderSize {
					// A log cut at a record boundary is a shorter log: an
					// append-only log cannot know its own end. It must
					// never show more than it holds.
					if err == nil && s.Log.End.Records > clean.Log.End.Records {
						t.Fatalf("log cut to %d bytes shows %d records", n, s.Log.End.Records)
					}
					if err != nil && !errors.Is(err, ErrCorrupt) {
						t.Fatalf("log cut to %d bytes: %v", n, err)
					}
					continue
				}
				if !errors.Is(err, ErrTruncated) || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("cut to %d of %d bytes: err = %v", n, len(orig), err)
				}
				r := bytes.NewReader(b)
				switch name {
				case "mappartition.bin":
					_, err = OpenMapPartition(r, int64(n))
				case "reducepartition.bin":
					_, err = OpenReducePartition(r, int64(n))
				case "identity.bin":
					_, _, err = DecodeDiskIdentity(b)
				}
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("open of a cut to %d bytes: err = %v", n, err)
				}
			}
		})
	}
}

// withVersion returns a copy of file whose header claims the given major
// and minor, with a valid header CRC (and footer copy of it): what a newer
// Sluice would write.
func withVersion(t testing.TB, file []byte, major, minor uint16) []byte {
	b := bytes.Clone(file)
	kind, n, err := HeaderLength(b)
	must(t, err)
	binary.LittleEndian.PutUint16(b[prefixMajorOff:], major)
	binary.LittleEndian.PutUint16(b[prefixMinorOff:], minor)
	crc := Checksum(b[:n-crcSize])
	binary.LittleEndian.PutUint32(b[n-crcSize:], crc)
	var footer []byte
	switch kind {
	case KindMapPartition:
		footer = b[len(b)-MapFooterSize:]
		binary.LittleEndian.PutUint32(footer[mfHeaderCRCOff:], crc)
	case KindReducePartition:
		footer = b[len(b)-ReduceFooterSize:]
		binary.LittleEndian.PutUint32(footer[rfHeaderCRCOff:], crc)
	}
	if footer != nil {
		end := len(footer) - crcSize
		binary.LittleEndian.PutUint32(footer[end:], Checksum(footer[:end]))
	}
	return b
}

func TestNewerMajorRefused(t *testing.T) {
	for _, name := range goldenNames {
		b := withVersion(t, readGolden(t, name), 2, 0)
		_, err := Verify(bytes.NewReader(b), nil, VerifyOptions{})
		var ve *VersionError
		if !errors.Is(err, ErrVersion) || !errors.As(err, &ve) || ve.Found != makeVersion(2, 0) {
			t.Fatalf("%s with major 2: err = %v", name, err)
		}
		msg := err.Error()
		for _, s := range []string{"2.0", "1.x", "upgrade Sluice"} {
			if !strings.Contains(msg, s) {
				t.Errorf("%s: message %q does not say %q", name, msg, s)
			}
		}
		r := bytes.NewReader(b)
		switch name {
		case "mappartition.bin":
			_, err = OpenMapPartition(r, int64(len(b)))
		case "reducepartition.bin":
			_, err = OpenReducePartition(r, int64(len(b)))
		case "identity.bin":
			_, _, err = DecodeDiskIdentity(b)
		case "commitlog.bin":
			_, err = NewLogScanner(b)
		}
		if !errors.Is(err, ErrVersion) {
			t.Fatalf("%s with major 2, io.ReaderAt path: err = %v", name, err)
		}
		// Major 0 was never written: corrupt, not a version to upgrade to.
		if _, err := Verify(bytes.NewReader(withVersion(t, readGolden(t, name), 0, 0)), nil, VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s with major 0: err = %v", name, err)
		}
		// A newer minor of the same major is read.
		if _, err := Verify(bytes.NewReader(withVersion(t, readGolden(t, name), 1, 7)), nil, VerifyOptions{}); err != nil {
			t.Fatalf("%s with minor 7: %v", name, err)
		}
	}
}

// TestLogMinor0 reads the 1.0 commit log golden file: its reduce commits
// have no map count or codec, and it replays to the same partitions as the
// current one.
func TestLogMinor0(t *testing.T) {
	old, err := os.ReadFile(filepath.Join(goldenDir, "commitlog-1.0.bin"))
	must(t, err)
	c0, h0, _, err := ReplayLog(old)
	must(t, err)
	c1, h1, _, err := ReplayLog(readGolden(t, "commitlog.bin"))
	must(t, err)
	if h0.Disk != h1.Disk || len(c0.Maps) != len(c1.Maps) || len(c0.Reduces) != len(c1.Reduces) {
		t.Fatalf("1.0 log replays to %d maps, %d reduces; the current one to %d, %d", len(c0.Maps), len(c0.Reduces), len(c1.Maps), len(c1.Reduces))
	}
	for k, s1 := range c1.Reduces {
		s0 := c0.Reduces[k]
		if s0 == nil || s0.MapCount != 0 || !slices.Equal(s0.Commits, s1.Commits) || s0.Finalized != s1.Finalized {
			t.Errorf("%v: 1.0 %+v, current %+v", k, s0, s1)
		}
	}
	s, err := NewLogScanner(old)
	must(t, err)
	for s.Next() {
		if r := s.Record(); r.Kind == RecordReduceCommitted && (r.MapCount != 0 || r.Codec != CodecNone) {
			t.Errorf("1.0 record %+v has a map count or codec", r)
		}
	}
	must(t, s.Err())
}
