package layout

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// BenchmarkBufferHeaderCheck is the consumer's per-buffer work on the read
// path: decode and check a buffer header, then check the 64 KiB payload's
// CRC. It must not allocate.
func BenchmarkBufferHeaderCheck(b *testing.B) {
	payload := bytes.Repeat([]byte("sluice shuffles"), 64<<10/15+1)[:64<<10]
	frame := make([]byte, BufferHeaderSize+len(payload))
	h := BufferHeader{Subpartition: 3, PayloadLength: uint32(len(payload)), UncompressedLength: uint32(len(payload)), PayloadCRC: Checksum(payload)}
	must(b, PutBufferHeader(frame, &h))
	copy(frame[BufferHeaderSize:], payload)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := DecodeBufferHeader(frame)
		if err != nil {
			b.Fatal(err)
		}
		if err := got.CheckPayload(frame[BufferHeaderSize : BufferHeaderSize+got.PayloadLength]); err != nil {
			b.Fatal(err)
		}
	}
}

// denseMap builds a MapPartition whose every subpartition has one small
// buffer in every region.
func denseMap(b testing.TB, subs, regions uint32) []byte {
	s := mapSpec{subs: subs}
	for range regions {
		var bufs []goldenBuffer
		for sub := range subs {
			bufs = append(bufs, goldenBuffer{sub, raw("x")})
		}
		s.regions = append(s.regions, bufs)
		s.bcast = append(s.bcast, false)
	}
	file, _ := s.build(b, 0)
	return file
}

// BenchmarkIndexLookup resolves the extent of one subpartition in one
// region of a 10,000-subpartition file: a directory search, one 4 KiB index
// block read (from memory here) and CRC-checked, one lookup.
func BenchmarkIndexLookup(b *testing.B) {
	const subs, regions = 10000, 20
	file := denseMap(b, subs, regions)
	r := bytes.NewReader(file)
	p, err := OpenMapPartition(r, int64(len(file)))
	must(b, err)
	buf := make([]byte, IndexBlockSizeMax)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sub := uint32(i*7919) % subs
		e, _, err := p.Extent(r, i%regions, sub, sub+1, buf)
		if err != nil || e.Length != BufferHeaderSize+1 {
			b.Fatalf("%+v %v", e, err)
		}
		i++
	}
}

// BenchmarkIndexBlockLookup is a lookup in a block already read and checked
// (as from the engine's index block cache).
func BenchmarkIndexBlockLookup(b *testing.B) {
	file := denseMap(b, 10000, 1)
	r := bytes.NewReader(file)
	p, err := OpenMapPartition(r, int64(len(file)))
	must(b, err)
	ref, _, _ := p.BlockFor(0, 5000)
	blk, _, err := p.ReadIndexBlock(r, ref, nil)
	must(b, err)
	b.ReportAllocs()
	i := uint32(0)
	for b.Loop() {
		_ = blk.Lookup(blk.FirstSub + i%uint32(blk.Count))
		i++
	}
}

// recoveryLog writes a commit log of n MapCommitted records with 16-byte
// job and dataset ids, in group commits of 64.
func recoveryLog(b testing.TB, n int) []byte {
	log, err := AppendLogHeader(nil, &LogHeader{Disk: goldenDisk, FirstLSN: 1})
	must(b, err)
	job := []byte("0123456789abcdef")
	ds := []byte("fedcba9876543210")
	for i := range n {
		log, err = AppendRecord(log, &Record{LSN: uint64(i + 1), BatchPos: uint16(i % 64), Kind: RecordMapCommitted,
			Job: job, Dataset: ds, Index: uint32(i), Attempt: 0, FileLength: 1 << 30, FooterCRC: uint32(i)})
		must(b, err)
	}
	return log
}

// BenchmarkLogScan decodes a commit log of 100,000 partitions, as recovery
// does; decoding a record allocates nothing.
func BenchmarkLogScan(b *testing.B) {
	const n = 100000
	log := recoveryLog(b, n)
	b.SetBytes(int64(len(log)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		s, err := NewLogScanner(log)
		if err != nil {
			b.Fatal(err)
		}
		var got int
		for s.Next() {
			if s.Record().Kind == RecordMapCommitted {
				got++
			}
		}
		if got != n || s.Err() != nil {
			b.Fatalf("%d records, %v", got, s.Err())
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkReplayLog is recovery's first step for a disk of 100,000
// MapPartitions: decode the commit log and build the catalog (one map entry
// per partition; ids are interned).
func BenchmarkReplayLog(b *testing.B) {
	const n = 100000
	log := recoveryLog(b, n)
	b.SetBytes(int64(len(log)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		c, _, _, err := ReplayLog(log)
		if err != nil || len(c.Maps) != n {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// largeMap builds a MapPartition of about size bytes: 64 KiB buffers over
// 1,000 subpartitions in regions of 64 MiB, like a real producer's spills.
func largeMap(b testing.TB, size int) []byte {
	payload := bytes.Repeat([]byte{0xa5, 0x5a, 0x33}, 64<<10/3+1)[:64<<10]
	const subs, perRegion = 1000, 1024
	bh, err := NewMapBuilder(&MapHeader{Job: []byte("bench"), Dataset: []byte("ds"), SubpartitionCount: subs})
	must(b, err)
	file, err := bh.AppendHeader(make([]byte, 0, size+size/16))
	must(b, err)
	h := BufferHeader{PayloadLength: uint32(len(payload)), UncompressedLength: uint32(len(payload)), PayloadCRC: Checksum(payload)}
	for n := 0; len(file) < size; {
		must(b, bh.StartRegion(false))
		for i := range perRegion {
			h.Subpartition = uint32(i * subs / perRegion)
			file, err = bh.AddBuffer(file, &h)
			must(b, err)
			file = appendBuffer(b, file, &h, payload)
			n++
		}
		file, err = bh.FinishRegion(file)
		must(b, err)
	}
	file, _, err = bh.Finish(file)
	must(b, err)
	return file
}

// BenchmarkVerifyMap streams a 256 MiB MapPartition through the verifier in
// 4 MiB chunks, as fsck does: the CPU cost of verification per byte.
func BenchmarkVerifyMap(b *testing.B) {
	file := largeMap(b, 256<<20)
	b.SetBytes(int64(len(file)))
	b.ReportAllocs()
	for b.Loop() {
		v := NewMapVerifier()
		for p := file; len(p) > 0; {
			n := min(len(p), verifyChunk)
			if _, err := v.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
		if _, err := v.Finish(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyReduce streams a ReducePartition of 64 KiB segments from
// 1,000 producers through the verifier in 4 MiB chunks.
func BenchmarkVerifyReduce(b *testing.B) {
	payload := bytes.Repeat([]byte{0x11, 0x22, 0x33}, 64<<10/3+1)[:64<<10]
	const maps, perMap = 1000, 4
	rb, err := NewReduceBuilder(&ReduceHeader{Job: []byte("bench"), Dataset: []byte("ds"), MapCount: maps})
	must(b, err)
	file, err := rb.AppendHeader(nil)
	must(b, err)
	var commits []AttemptCommit
	for m := range uint32(maps) {
		commits = append(commits, AttemptCommit{Map: m, Segments: perMap, Bytes: perMap * uint64(len(payload))})
	}
	for seq := range uint32(perMap) {
		for m := range uint32(maps) {
			h := SegmentHeader{Map: m, Seq: seq, PayloadLength: uint32(len(payload)), UncompressedLength: uint32(len(payload)), PayloadCRC: Checksum(payload)}
			must(b, rb.AddSegment(&h))
			file = appendSegment(b, file, &h, payload)
		}
	}
	file, _, err = rb.Finalize(file, commits)
	must(b, err)
	b.SetBytes(int64(len(file)))
	b.ReportAllocs()
	for b.Loop() {
		s, err := Verify(bytes.NewReader(file), nil, VerifyOptions{})
		if err != nil || s.Reduce.Footer.CommittedSegments != maps*perMap {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenMapPartition opens a 10,000-subpartition, 100-region file:
// header, footer and an 11 KiB directory, all checked.
func BenchmarkOpenMapPartition(b *testing.B) {
	file := denseMap(b, 10000, 100)
	r := bytes.NewReader(file)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := OpenMapPartition(r, int64(len(file))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDescribeGolden(b *testing.B) {
	file := readGolden(b, "mappartition.bin")
	for b.Loop() {
		must(b, Describe(io.Discard, bytes.NewReader(file), int64(len(file)), DescribeOptions{}))
	}
}
