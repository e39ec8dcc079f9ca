package layout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// The fuzz targets below are seeded from the golden files. CI runs them as
// plain tests over their seeds; run one for real with, for example,
//
//	go test ./layout -run '^$' -fuzz '^FuzzVerify$' -fuzztime 60s
//
// Each checks that no input panics and that what one path accepts, the
// others accept too.

func seedGolden(f *testing.F) [][]byte {
	var files [][]byte
	for _, name := range goldenNames {
		files = append(files, readGolden(f, name))
	}
	return files
}

// FuzzVerify feeds any bytes, in chunks of a fuzzed size, to the verifier.
// A file it accepts must open and read without error through the
// io.ReaderAt paths.
func FuzzVerify(f *testing.F) {
	for i, b := range seedGolden(f) {
		f.Add(b, uint16(1+i*7))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		s, err := verifyChunked(data, 1+int(chunk))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		r := bytes.NewReader(data)
		switch s.Kind {
		case KindMapPartition:
			p, err := OpenMapPartition(r, int64(len(data)))
			if err != nil {
				t.Fatalf("verified file does not open: %v", err)
			}
			checkAllExtents(t, p, data)
		case KindReducePartition:
			p, err := OpenReducePartition(r, int64(len(data)))
			if err != nil {
				t.Fatalf("verified file does not open: %v", err)
			}
			if _, err := serveReduceErr(p, data); err != nil {
				t.Fatalf("verified file does not serve: %v", err)
			}
		}
	})
}

// checkAllExtents reads a few ranges of a verified MapPartition: every
// extent must lie inside its region and hold whole, valid buffers of the
// range.
func checkAllExtents(t *testing.T, p *MapPartition, data []byte) {
	n := p.Header.SubpartitionCount
	for _, rg := range [][2]uint32{{0, 1}, {0, n}, {n / 2, n/2 + 1}, {n - 1, n}} {
		if rg[0] >= rg[1] {
			continue
		}
		exts, _, err := p.Extents(bytes.NewReader(data), rg[0], rg[1], nil, nil)
		if err != nil {
			t.Fatalf("verified file: extents of %v: %v", rg, err)
		}
		for _, e := range exts {
			reg := p.Region(e.Region)
			if e.Offset < reg.DataOffset || e.Offset+e.Length > reg.DataOffset+reg.DataLength {
				t.Fatalf("extent %+v outside region %+v", e, reg)
			}
			for b := data[e.Offset : e.Offset+e.Length]; len(b) > 0; {
				h, err := DecodeBufferHeader(b)
				if err != nil || int(BufferHeaderSize+h.PayloadLength) > len(b) {
					t.Fatalf("extent %+v: %v", e, err)
				}
				if h.Subpartition != AllSubpartitions && (h.Subpartition < rg[0] || h.Subpartition >= rg[1]) {
					t.Fatalf("extent %+v of %v holds subpartition %d", e, rg, h.Subpartition)
				}
				b = b[BufferHeaderSize+h.PayloadLength:]
			}
		}
	}
}

func serveReduceErr(p *ReducePartition, file []byte) (int, error) {
	f, err := NewReduceFilter(p.Commits)
	if err != nil {
		return 0, err
	}
	served := 0
	for off := p.DataOffset; off < p.Footer.TableOffset; {
		h, err := DecodeSegmentHeader(file[off:])
		if err != nil {
			return served, err
		}
		ok, err := f.Admit(&h, off)
		if err != nil {
			return served, err
		}
		if ok {
			served++
		}
		off += SegmentHeaderSize + int64(h.PayloadLength)
		if off > p.Footer.TableOffset {
			return served, errors.New("segment overruns the attempt table")
		}
	}
	return served, f.Check()
}

// FuzzOpenMapPartition opens any bytes as a MapPartition and resolves
// ranges through whatever index blocks they hold.
func FuzzOpenMapPartition(f *testing.F) {
	for _, b := range seedGolden(f)[:1] {
		f.Add(b, uint32(1), uint32(2))
		f.Add(b, uint32(0), uint32(8))
	}
	f.Fuzz(func(t *testing.T, data []byte, start, end uint32) {
		p, err := OpenMapPartition(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		exts, _, err := p.Extents(bytes.NewReader(data), start, end, nil, nil)
		if err != nil {
			return
		}
		for _, e := range exts {
			if e.Offset < int64(p.HeaderLength) || e.Length <= 0 || e.Offset+e.Length > p.Footer.DirectoryOffset {
				t.Fatalf("extent %+v outside the data of a %d-byte file", e, len(data))
			}
		}
	})
}

// FuzzOpenReducePartition opens any bytes as a ReducePartition and serves
// its segments through the filter.
func FuzzOpenReducePartition(f *testing.F) {
	f.Add(seedGolden(f)[1])
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := OpenReducePartition(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		_, _ = serveReduceErr(p, data)
	})
}

// FuzzReduceVerifierOpen reads any bytes as a ReducePartition that may
// never have been finalized, as recovery does, and resumes it.
func FuzzReduceVerifierOpen(f *testing.F) {
	r := seedGolden(f)[1]
	f.Add(r)
	f.Add(r[:len(r)-ReduceFooterSize-20])
	f.Fuzz(func(t *testing.T, data []byte) {
		v := NewReduceVerifier(ReduceVerifyOptions{AllowOpen: true})
		if _, err := v.Write(data); err != nil {
			return
		}
		s, err := v.Finish()
		if err != nil || s.Finalized {
			return
		}
		if s.ValidLength > int64(len(data)) {
			t.Fatalf("valid length %d of %d bytes", s.ValidLength, len(data))
		}
		b, err := ResumeReduceBuilder(&s)
		if err != nil {
			t.Fatalf("resume: %v", err)
		}
		file, _, err := b.Finalize(bytes.Clone(data[:s.ValidLength]), nil)
		if err != nil {
			t.Fatalf("finalize: %v", err)
		}
		if _, err := verifyChunked(file, 4096); err != nil {
			t.Fatalf("resumed and finalized file: %v", err)
		}
	})
}

// FuzzDecodeBufferHeader decodes buffer and segment headers as they come off
// the wire; what decodes must encode to the same bytes.
func FuzzDecodeBufferHeader(f *testing.F) {
	m, r := seedGolden(f)[0], seedGolden(f)[1]
	p, err := OpenMapPartition(bytes.NewReader(m), int64(len(m)))
	must(f, err)
	for i := range p.Regions() {
		f.Add(m[p.Region(i).DataOffset:][:BufferHeaderSize])
	}
	q, err := OpenReducePartition(bytes.NewReader(r), int64(len(r)))
	must(f, err)
	f.Add(r[q.DataOffset:][:SegmentHeaderSize])
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := DecodeBufferHeader(data); err == nil {
			var b [BufferHeaderSize]byte
			if err := PutBufferHeader(b[:], &h); err != nil || !bytes.Equal(b[:], data[:BufferHeaderSize]) {
				t.Fatalf("buffer header %+v re-encodes differently: %v", h, err)
			}
			_ = h.CheckPayload(data[BufferHeaderSize:])
		}
		if h, err := DecodeSegmentHeader(data); err == nil {
			var b [SegmentHeaderSize]byte
			if err := PutSegmentHeader(b[:], &h); err != nil || !bytes.Equal(b[:], data[:SegmentHeaderSize]) {
				t.Fatalf("segment header %+v re-encodes differently: %v", h, err)
			}
			_ = h.CheckPayload(data[SegmentHeaderSize:])
		}
	})
}

// FuzzDecodeIndexBlock decodes index blocks; lookups in a block that decodes
// never decrease with the subpartition.
func FuzzDecodeIndexBlock(f *testing.F) {
	m := seedGolden(f)[0]
	p, err := OpenMapPartition(bytes.NewReader(m), int64(len(m)))
	must(f, err)
	for i := range p.Regions() {
		r := p.Region(i)
		f.Add(m[r.IndexOffset : r.IndexOffset+r.IndexLength])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		blk, err := DecodeIndexBlock(data, 0)
		if err != nil {
			return
		}
		prev := blk.Lookup(blk.FirstSub)
		for k := range uint32(64) {
			sub := blk.FirstSub + k*k
			if sub < blk.FirstSub {
				break
			}
			got := blk.Lookup(sub)
			if got < prev {
				t.Fatalf("lookup(%d) = %d after %d", sub, got, prev)
			}
			prev = got
		}
	})
}

// FuzzLogScanner scans any bytes as a commit log; every record it returns
// must encode back to exactly the bytes it came from.
func FuzzLogScanner(f *testing.F) {
	log := seedGolden(f)[3]
	f.Add(log)
	f.Add(log[:200])
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := NewLogScanner(data)
		if err != nil {
			return
		}
		for s.Next() {
			rec := s.Record()
			end := s.End().ValidLength
			b, err := AppendRecord(nil, rec)
			if err != nil {
				t.Fatalf("record %+v does not encode: %v", rec, err)
			}
			if s.version.Minor() == Current.Minor() && !bytes.Equal(b, data[s.Offset():end]) {
				t.Fatalf("record %+v re-encodes differently", rec)
			}
		}
		// Streamed through the smallest window, the scan is the same.
		if got, want := logTranscript(newLogStreamScanner(bytes.NewReader(data), int64(len(data)), 0)), logTranscript(NewLogScanner(data)); got != want {
			t.Fatalf("streamed scan differs:\n%s\nin memory:\n%s", got, want)
		}
		e := s.End()
		if e.ValidLength+e.Padding+e.TornBytes != int64(len(data)) && s.Err() == nil {
			t.Fatalf("end %+v does not account for %d bytes", e, len(data))
		}
		// What replays must compact into a log that replays to the same.
		c, h, end, err := ReplayLog(data)
		if err != nil {
			return
		}
		compacted, _, err := c.AppendSnapshot(nil, LogHeader{Disk: h.Disk, Generation: h.Generation + 1, FirstLSN: h.FirstLSN + end.Records})
		if err != nil {
			t.Fatalf("compact: %v", err)
		}
		c2, _, _, err := ReplayLog(compacted)
		if err != nil || len(c2.Maps) != len(c.Maps) || len(c2.Reduces) != len(c.Reduces) {
			t.Fatalf("compacted log replays to %d maps, %d reduces (want %d, %d): %v", len(c2.Maps), len(c2.Reduces), len(c.Maps), len(c.Reduces), err)
		}
	})
}

// FuzzDecodeDiskIdentity decodes disk identities; what decodes re-encodes:
// to the same bytes when it is of the current version, else (an older
// minor) to an identity that decodes the same.
func FuzzDecodeDiskIdentity(f *testing.F) {
	f.Add(seedGolden(f)[2])
	f.Fuzz(func(t *testing.T, data []byte) {
		d, v, err := DecodeDiskIdentity(data)
		if err != nil {
			return
		}
		b, err := AppendDiskIdentity(nil, &d)
		if err != nil {
			t.Fatalf("identity %+v does not encode: %v", d, err)
		}
		if v == Current && !bytes.Equal(b, data) {
			t.Fatalf("identity %+v re-encodes differently", d)
		}
		if d2, _, err := DecodeDiskIdentity(b); err != nil || d2 != d {
			t.Fatalf("identity %+v re-encodes to %+v: %v", d, d2, err)
		}
	})
}

// FuzzDescribe describes any bytes: never a panic, never an error other
// than writing.
func FuzzDescribe(f *testing.F) {
	for _, b := range seedGolden(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := Describe(io.Discard, bytes.NewReader(data), int64(len(data)), DescribeOptions{MaxItems: 1000}); err != nil {
			t.Fatalf("describe: %v", err)
		}
	})
}

// FuzzVerifyRepaired mutates a file and then repairs every checksum it can
// locate (headers, payloads, index blocks, directory, table, footer, log
// records) before verifying it. Random bytes almost never carry a valid
// CRC32C, so without the repair the fuzzer would never get past the
// checksums to the checks behind them: index entries against buffers,
// directory against regions, attempt table against segments, footer totals.
// Whatever the verifier accepts must open and read cleanly.
func FuzzVerifyRepaired(f *testing.F) {
	for i, b := range seedGolden(f) {
		f.Add(b, uint16(1+i*13))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		data = bytes.Clone(data)
		repairCRCs(data)
		s, err := verifyChunked(data, 1+int(chunk))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		r := bytes.NewReader(data)
		switch s.Kind {
		case KindMapPartition:
			p, err := OpenMapPartition(r, int64(len(data)))
			if err != nil {
				t.Fatalf("verified file does not open: %v", err)
			}
			checkAllExtents(t, p, data)
		case KindReducePartition:
			p, err := OpenReducePartition(r, int64(len(data)))
			if err != nil {
				t.Fatalf("verified file does not open: %v", err)
			}
			if _, err := serveReduceErr(p, data); err != nil {
				t.Fatalf("verified file does not serve: %v", err)
			}
		case KindCommitLog:
			if c, h, end, err := ReplayLog(data); err == nil {
				compacted, _, err := c.AppendSnapshot(nil, LogHeader{Disk: h.Disk, Generation: h.Generation + 1, FirstLSN: h.FirstLSN + end.Records})
				if err != nil {
					t.Fatalf("compact: %v", err)
				}
				if c2, _, _, err := ReplayLog(compacted); err != nil || len(c2.Maps) != len(c.Maps) || len(c2.Reduces) != len(c.Reduces) {
					t.Fatalf("compacted log does not replay to the same state: %v", err)
				}
			}
		}
		if err := Describe(io.Discard, r, int64(len(data)), DescribeOptions{MaxItems: 1000}); err != nil {
			t.Fatalf("describe: %v", err)
		}
	})
}

// repairCRCs walks b as the file its magic names, as far as the sizes in it
// allow, and rewrites every checksum to match the bytes it covers.
func repairCRCs(b []byte) {
	kind, n, err := HeaderLength(b)
	if err != nil || n > len(b) {
		return
	}
	le := binary.LittleEndian
	fix := func(data []byte, at int) { le.PutUint32(b[at:], Checksum(data)) }
	fix(b[:n-crcSize], n-crcSize)
	headerCRC := le.Uint32(b[n-crcSize:])
	off := n
	switch kind {
	case KindMapPartition, KindReducePartition:
		for off < len(b) {
			switch b[off] {
			case itemBuffer, itemSegment:
				hs, crcOff, lenOff, payCRCOff := BufferHeaderSize, bufHeaderCRCOff, bufPayloadLenOff, bufPayloadCRCOff
				if b[off] == itemSegment {
					hs, crcOff, lenOff, payCRCOff = SegmentHeaderSize, segHeaderCRCOff, segPayloadLenOff, segPayloadCRCOff
				}
				if off+hs > len(b) {
					return
				}
				end := off + hs + int(le.Uint32(b[off+lenOff:]))
				if end > len(b) || end < off {
					return
				}
				fix(b[off+hs:end], off+payCRCOff)
				fix(b[off:off+crcOff], off+crcOff)
				off = end
			case itemIndex:
				if off+ibEntriesOff > len(b) {
					return
				}
				size, err := indexBlockSize(b[off:], 0)
				if err != nil || off+size > len(b) {
					return
				}
				fix(b[off:off+size-crcSize], off+size-crcSize)
				off += size
			case itemDirectory, itemAttempts:
				var size int
				if b[off] == itemDirectory {
					if off+dirEntriesOff > len(b) {
						return
					}
					size = dirOverhead + int(le.Uint32(b[off+dirRegionsOff:]))*regionEntrySize + int(le.Uint32(b[off+dirBlocksOff:]))*blockEntrySize
				} else {
					if off+atFirstOff > len(b) {
						return
					}
					size = attemptTableOverhead + int(le.Uint32(b[off+atEntriesOff:]))*attemptEntrySz
				}
				if size < 0 || off+size > len(b) {
					return
				}
				fix(b[off:off+size-crcSize], off+size-crcSize)
				off += size
				footer, crcAt, hdrAt := MapFooterSize, mfFooterCRCOff, mfHeaderCRCOff
				if kind == KindReducePartition {
					footer, crcAt, hdrAt = ReduceFooterSize, rfFooterCRCOff, rfHeaderCRCOff
				}
				if off+footer <= len(b) {
					le.PutUint32(b[off+hdrAt:], headerCRC)
					fix(b[off:off+crcAt], off+crcAt)
				}
				return
			default:
				return
			}
		}
	case KindCommitLog:
		for off+RecordHeaderSize <= len(b) {
			end := off + RecordHeaderSize + int(le.Uint16(b[off+recLengthOff:]))
			if end > len(b) {
				return
			}
			fix(b[off+recLengthOff:end], off+recCRCOff)
			off = end
		}
	}
}
