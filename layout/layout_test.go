package layout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFindBitFlipMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 3, 7, 8, 63, 64, 257, 1000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		want := Checksum(data)
		for i := range n {
			for bit := range 8 {
				data[i] ^= 1 << bit
				got := Checksum(data)
				data[i] ^= 1 << bit
				pos, b, ok := findBitFlip(n, want^got)
				if !ok || pos != i || int(b) != bit {
					t.Fatalf("n=%d byte %d bit %d: found %v at %d bit %d", n, i, bit, ok, pos, b)
				}
			}
		}
		// Two flips are not one.
		if n > 1 {
			data[0] ^= 1
			data[n-1] ^= 2
			if _, _, ok := findBitFlip(n, want^Checksum(data)); ok {
				t.Errorf("n=%d: two flips explained as one", n)
			}
		}
	}
	// A flip in the stored checksum itself.
	e := crcMismatch(KindMapPartition, 100, 20, "x", 0x1234, 0x1234^(1<<13))
	if !e.Flip.Found || !e.Flip.InCRC || e.Flip.Offset != 121 || e.Flip.Bit != 5 {
		t.Errorf("stored-CRC flip: %+v", e.Flip)
	}
	if !strings.Contains(e.Error(), "stored checksum byte at offset 121, bit 5") {
		t.Errorf("message %q", e.Error())
	}
}

func TestBufferHeaderRoundTrip(t *testing.T) {
	valid := []BufferHeader{
		{},
		{Subpartition: 7, PayloadLength: 10, UncompressedLength: 10, PayloadCRC: 0xdeadbeef},
		{Subpartition: AllSubpartitions, Codec: CodecLZ4, PayloadLength: 3, UncompressedLength: 900},
		{Subpartition: 1, Flags: FlagRawFallback, PayloadLength: MaxPayloadSize, UncompressedLength: MaxPayloadSize},
	}
	for _, h := range valid {
		var b [BufferHeaderSize]byte
		must(t, PutBufferHeader(b[:], &h))
		got, err := DecodeBufferHeader(b[:])
		if err != nil || got != h {
			t.Errorf("%+v: decoded %+v, %v", h, got, err)
		}
		var s [SegmentHeaderSize]byte
		sh := SegmentHeader{Map: 3, Attempt: 2, Seq: 9, Codec: h.Codec, Flags: h.Flags,
			PayloadLength: h.PayloadLength, UncompressedLength: h.UncompressedLength, PayloadCRC: h.PayloadCRC}
		must(t, PutSegmentHeader(s[:], &sh))
		gs, err := DecodeSegmentHeader(s[:])
		if err != nil || gs != sh {
			t.Errorf("%+v: decoded %+v, %v", sh, gs, err)
		}
	}
	invalid := []BufferHeader{
		{Codec: 2},
		{Flags: 2},
		{Codec: CodecLZ4, Flags: FlagRawFallback, PayloadLength: 1, UncompressedLength: 2},
		{PayloadLength: 1, UncompressedLength: 2},
		{Codec: CodecLZ4, PayloadLength: 0, UncompressedLength: 0},
		{PayloadLength: MaxPayloadSize + 1, UncompressedLength: MaxPayloadSize + 1},
	}
	for _, h := range invalid {
		var b [BufferHeaderSize]byte
		if err := PutBufferHeader(b[:], &h); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: PutBufferHeader = %v", h, err)
		}
		// The same fields with a valid CRC are corrupt on decode.
		b[bufKindOff], b[bufCodecOff] = itemBuffer, byte(h.Codec)
		binary.LittleEndian.PutUint16(b[bufFlagsOff:], uint16(h.Flags))
		binary.LittleEndian.PutUint32(b[bufPayloadLenOff:], h.PayloadLength)
		binary.LittleEndian.PutUint32(b[bufUncompLenOff:], h.UncompressedLength)
		binary.LittleEndian.PutUint32(b[bufHeaderCRCOff:], Checksum(b[:bufHeaderCRCOff]))
		if _, err := DecodeBufferHeader(b[:]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%+v: DecodeBufferHeader = %v", h, err)
		}
	}
	// Payload checks.
	p := []byte("payload")
	h := BufferHeader{PayloadLength: 7, UncompressedLength: 7, PayloadCRC: Checksum(p)}
	must(t, h.CheckPayload(p))
	if err := h.CheckPayload(p[:6]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short payload: %v", err)
	}
	p[3] ^= 0x10
	var ce *CorruptError
	if err := h.CheckPayload(p); !errors.As(err, &ce) || !ce.Flip.Found || ce.Flip.Offset != BufferHeaderSize+3 || ce.Flip.Bit != 4 {
		t.Errorf("flipped payload: %v", err)
	}
	if _, err := DecodeBufferHeader(make([]byte, 23)); !errors.Is(err, ErrTruncated) {
		t.Errorf("short header: %v", err)
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte{0xfe}, MaxIDSize)
	for _, h := range []MapHeader{
		{Job: []byte("j"), Dataset: []byte("d"), SubpartitionCount: 1},
		{Job: long, Dataset: long, MapIndex: 1 << 31, Attempt: 9, SubpartitionCount: MaxSubpartitions, Codec: CodecLZ4},
	} {
		b, err := AppendMapHeader([]byte("junk"), &h)
		must(t, err)
		got, n, v, err := DecodeMapHeader(b[4:])
		if err != nil || n != len(b)-4 || v != Current || !bytes.Equal(got.Job, h.Job) || !bytes.Equal(got.Dataset, h.Dataset) ||
			got.MapIndex != h.MapIndex || got.Attempt != h.Attempt || got.SubpartitionCount != h.SubpartitionCount || got.Codec != h.Codec {
			t.Errorf("%+v: decoded %+v, %d, %v", h, got, n, err)
		}
	}
	for _, h := range []MapHeader{
		{Dataset: []byte("d"), SubpartitionCount: 1},
		{Job: append(long, 1), Dataset: []byte("d"), SubpartitionCount: 1},
		{Job: []byte("j"), Dataset: []byte("d")},
		{Job: []byte("j"), Dataset: []byte("d"), SubpartitionCount: 1, Codec: 9},
	} {
		if _, err := AppendMapHeader(nil, &h); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", h, err)
		}
	}
	rh := ReduceHeader{Job: long, Dataset: []byte("ds"), ReduceIndex: 4, MapCount: 100, Codec: CodecLZ4}
	b, err := AppendReduceHeader(nil, &rh)
	must(t, err)
	got, _, _, err := DecodeReduceHeader(b)
	if err != nil || !bytes.Equal(got.Job, long) || got.ReduceIndex != 4 || got.MapCount != 100 || got.Codec != CodecLZ4 {
		t.Errorf("reduce header: %+v, %v", got, err)
	}
	// A header is refused where another kind's magic stands.
	if _, _, _, err := DecodeMapHeader(b); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not a MapPartition") {
		t.Errorf("reduce header as map header: %v", err)
	}

	// A newer minor may add fields before the CRC; our minor may not.
	h := MapHeader{Job: []byte("j"), Dataset: []byte("d"), SubpartitionCount: 3}
	withExtra := func(minor uint16) []byte {
		b, err := AppendMapHeader(nil, &h)
		must(t, err)
		b = append(b[:len(b)-crcSize], 1, 2, 3, 4, 5)
		binary.LittleEndian.PutUint16(b[prefixMinorOff:], minor)
		binary.LittleEndian.PutUint32(b[prefixHeaderLenOff:], uint32(len(b)+crcSize))
		return binary.LittleEndian.AppendUint32(b, Checksum(b))
	}
	if got, n, v, err := DecodeMapHeader(withExtra(3)); err != nil || n != h.Size()+5 || v.Minor() != 3 || got.SubpartitionCount != 3 {
		t.Errorf("newer minor with extra fields: %v", err)
	}
	if _, _, _, err := DecodeMapHeader(withExtra(0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("current minor with extra fields: %v", err)
	}

	d := DiskIdentity{Disk: goldenDisk, Worker: goldenWorker, Created: time.Unix(0, 1234567890123).UTC()}
	db, err := AppendDiskIdentity(nil, &d)
	must(t, err)
	gd, _, err := DecodeDiskIdentity(db)
	if err != nil || gd != d {
		t.Errorf("disk identity %+v, %v", gd, err)
	}
	if _, err := AppendDiskIdentity(nil, &DiskIdentity{Disk: goldenDisk}); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero worker id: %v", err)
	}
	if _, _, err := DecodeDiskIdentity(append(db, 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing byte: %v", err)
	}
}

func TestPaths(t *testing.T) {
	long := bytes.Repeat([]byte{0xff}, MaxIDSize)
	for _, id := range [][]byte{{0}, []byte("application_1700000000000_0042"), long} {
		name := EncodeID(id)
		back, err := DecodeID(name)
		if err != nil || !bytes.Equal(back, id) || len(name) > 255 || strings.ContainsAny(name, "/.") {
			t.Errorf("%x: %q, %x, %v", id, name, back, err)
		}
	}
	if _, err := DecodeID("0"); !errors.Is(err, ErrInvalid) {
		t.Errorf("non-canonical id: %v", err)
	}
	if got := MapPartitionPath([]byte("j"), []byte("d"), 12, 3); got != "data/d8/cg/map-12-3" {
		t.Errorf("map path %q", got)
	}
	if got := ReducePartitionPath([]byte("j"), []byte("d"), 7); got != "data/d8/cg/reduce-7" {
		t.Errorf("reduce path %q", got)
	}
	// Encoded ids sort as the ids do.
	a, b := EncodeID([]byte{1, 2}), EncodeID([]byte{1, 3})
	if a >= b {
		t.Errorf("%q >= %q", a, b)
	}
}

// mapSpec is a random MapPartition: regions of buffers.
type mapSpec struct {
	subs    uint32
	regions [][]goldenBuffer
	bcast   []bool
}

func randomMapSpec(rng *rand.Rand) mapSpec {
	s := mapSpec{subs: uint32(1 + rng.IntN([]int{4, 40, 3000, 100000}[rng.IntN(4)]))}
	for range rng.IntN(5) {
		broadcast := rng.IntN(5) == 0
		var bufs []goldenBuffer
		n := rng.IntN([]int{3, 30, 2500}[rng.IntN(3)])
		density := rng.Float64()
		sub := uint32(0)
		for range n {
			if broadcast {
				bufs = append(bufs, goldenBuffer{AllSubpartitions, raw(fmt.Sprint("b", rng.IntN(1000)))})
				continue
			}
			if rng.Float64() > density {
				sub += uint32(rng.IntN(200))
			} else if rng.IntN(3) == 0 {
				sub++
			}
			if sub >= s.subs {
				break
			}
			p := raw(fmt.Sprintf("s%d-%d", sub, rng.IntN(100)))
			if rng.IntN(4) == 0 {
				p = payload{codec: CodecLZ4, data: []byte{byte(sub)}, uncompressed: 1 + rng.IntN(1000)}
			}
			bufs = append(bufs, goldenBuffer{sub, p})
		}
		s.regions = append(s.regions, bufs)
		s.bcast = append(s.bcast, broadcast)
	}
	return s
}

func (s *mapSpec) build(t testing.TB, regionMax int64) ([]byte, MapFooter) {
	h := &MapHeader{Job: []byte("job"), Dataset: []byte("ds"), SubpartitionCount: s.subs, Codec: CodecLZ4}
	b, err := NewMapBuilder(h)
	must(t, err)
	if regionMax > 0 {
		b.regionMax = regionMax
	}
	file, err := b.AppendHeader(nil)
	must(t, err)
	for i, bufs := range s.regions {
		must(t, b.StartRegion(s.bcast[i]))
		for _, gb := range bufs {
			bh := BufferHeader{Subpartition: gb.sub, Codec: gb.p.codec, PayloadLength: uint32(len(gb.p.data)),
				UncompressedLength: uint32(gb.p.uncompressed), PayloadCRC: Checksum(gb.p.data)}
			file, err = b.AddBuffer(file, &bh)
			must(t, err)
			file = appendBuffer(t, file, &bh, gb.p.data)
		}
		file, err = b.FinishRegion(file)
		must(t, err)
	}
	file, f, err := b.Finish(file)
	must(t, err)
	return file, f
}

// want returns the payloads a reader of [start, end) must see.
func (s *mapSpec) want(start, end uint32) []string {
	var out []string
	for _, bufs := range s.regions {
		for _, gb := range bufs {
			if gb.sub == AllSubpartitions || gb.sub >= start && gb.sub < end {
				out = append(out, string(gb.p.data))
			}
		}
	}
	return out
}

func TestMapPartitionRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := range 60 {
		s := randomMapSpec(rng)
		var regionMax int64
		if iter%4 == 3 {
			regionMax = int64(40 + rng.IntN(400)) // force the builder to cut regions
		}
		file, f := s.build(t, regionMax)
		sum, err := verifyChunked(file, 1+rng.IntN(5000))
		if err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		if sum.Map.Footer != f {
			t.Fatalf("iteration %d: verifier footer %+v, builder %+v", iter, sum.Map.Footer, f)
		}
		p, err := OpenMapPartition(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			t.Fatalf("iteration %d: open: %v", iter, err)
		}
		for range 40 {
			start := uint32(rng.IntN(int(s.subs)))
			end := start + 1 + uint32(rng.IntN([]int{1, 5, 2000}[rng.IntN(3)]))
			got := readRange(t, p, file, start, end)
			if want := s.want(start, end); !slices.Equal(got, want) {
				t.Fatalf("iteration %d: [%d, %d) reads %d buffers %q, want %d %q", iter, start, end, len(got), got, len(want), want)
			}
		}
	}
}

// TestIndexBlocksBounded checks that a lookup reads at most one block per
// end and that blocks are split as the capacities say.
// TestEmptyMapPartition: a producer that wrote nothing still leaves a valid
// file of header, empty directory and footer, from which every range reads
// nothing.
func TestEmptyMapPartition(t *testing.T) {
	s := mapSpec{subs: 5, regions: [][]goldenBuffer{nil, nil}, bcast: []bool{false, true}}
	file, f := s.build(t, 0)
	if f.Regions != 0 || f.FileLength != int64(len(file)) || len(file) != mapHeaderFixed+len("job")+len("ds")+dirOverhead+MapFooterSize {
		t.Fatalf("footer %+v, %d bytes", f, len(file))
	}
	verifyOK(t, file)
	p, err := OpenMapPartition(bytes.NewReader(file), int64(len(file)))
	must(t, err)
	if exts, _, err := p.Extents(bytes.NewReader(file), 0, 5, nil, nil); err != nil || len(exts) != 0 {
		t.Fatalf("extents %v, %v", exts, err)
	}
	if _, _, err := p.Extents(bytes.NewReader(file), 5, 6, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("range past the subpartitions: %v", err)
	}
}

func TestIndexBlocksBounded(t *testing.T) {
	for _, tc := range []struct {
		name        string
		subs, every uint32
		enc         IndexEncoding
		blocks      uint32
	}{
		{"dense", 3000, 1, IndexDense, 3},      // 3000 entries / 1019 per block
		{"half", 3000, 2, IndexDense, 3},       // 1500 of 2999: dense still cheaper
		{"sparse", 100000, 97, IndexSparse, 3}, // 1031 entries / 509 per block
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bufs []goldenBuffer
			for sub := uint32(0); sub < tc.subs; sub += tc.every {
				bufs = append(bufs, goldenBuffer{sub, raw("x")})
			}
			s := mapSpec{subs: tc.subs, regions: [][]goldenBuffer{bufs}, bcast: []bool{false}}
			file, _ := s.build(t, 0)
			p, err := OpenMapPartition(bytes.NewReader(file), int64(len(file)))
			must(t, err)
			if r := p.Region(0); r.Blocks != tc.blocks || r.IndexLength > int64(r.Blocks)*IndexBlockSizeMax {
				t.Fatalf("region %+v, want %d blocks", r, tc.blocks)
			}
			counter := &countingReader{r: bytes.NewReader(file)}
			for sub := uint32(0); sub < tc.subs; sub += 1 + tc.subs/50 {
				counter.reads, counter.bytes = 0, 0
				e, _, err := p.Extent(counter, 0, sub, sub+1, nil)
				must(t, err)
				if counter.reads > 2 || counter.bytes > 2*IndexBlockSizeMax {
					t.Fatalf("subpartition %d: %d reads of %d bytes", sub, counter.reads, counter.bytes)
				}
				if want := int64(0); sub%tc.every == 0 && e.Length == want {
					t.Fatalf("subpartition %d: empty extent", sub)
				}
			}
		})
	}
}

type countingReader struct {
	r            *bytes.Reader
	reads, bytes int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	c.bytes += len(p)
	return c.r.ReadAt(p, off)
}

func TestMapBuilderRefusesMisuse(t *testing.T) {
	h := &MapHeader{Job: []byte("j"), Dataset: []byte("d"), SubpartitionCount: 4, Codec: CodecNone}
	buf := func(sub uint32, codec Codec) *BufferHeader {
		return &BufferHeader{Subpartition: sub, Codec: codec, PayloadLength: 1, UncompressedLength: 1}
	}
	for _, tc := range []struct {
		name string
		do   func(b *MapBuilder) error
	}{
		{"buffer outside a region", func(b *MapBuilder) error { _, err := b.AddBuffer(nil, buf(0, CodecNone)); return err }},
		{"subpartition out of range", func(b *MapBuilder) error {
			_ = b.StartRegion(false)
			_, err := b.AddBuffer(nil, buf(4, CodecNone))
			return err
		}},
		{"descending subpartitions", func(b *MapBuilder) error {
			_ = b.StartRegion(false)
			_, _ = b.AddBuffer(nil, buf(2, CodecNone))
			_, err := b.AddBuffer(nil, buf(1, CodecNone))
			return err
		}},
		{"subpartition in a broadcast region", func(b *MapBuilder) error {
			_ = b.StartRegion(true)
			_, err := b.AddBuffer(nil, buf(1, CodecNone))
			return err
		}},
		{"codec of another partition", func(b *MapBuilder) error {
			_ = b.StartRegion(false)
			h := buf(1, CodecLZ4)
			_, err := b.AddBuffer(nil, h)
			return err
		}},
		{"finish with an open region", func(b *MapBuilder) error {
			_ = b.StartRegion(false)
			_, _ = b.AddBuffer(nil, buf(1, CodecNone))
			_, _, err := b.Finish(nil)
			return err
		}},
		{"region inside a region", func(b *MapBuilder) error {
			_ = b.StartRegion(false)
			_, _ = b.AddBuffer(nil, buf(1, CodecNone))
			return b.StartRegion(false)
		}},
	} {
		b, err := NewMapBuilder(h)
		must(t, err)
		_, err = b.AppendHeader(nil)
		must(t, err)
		if err := tc.do(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// reduceSpec is a random ReducePartition: producers with attempts, pushes
// with retries, commits.
type reduceSpec struct {
	maps    uint32
	segs    []goldenSegment
	commits []AttemptCommit
}

func randomReduceSpec(rng *rand.Rand) reduceSpec {
	s := reduceSpec{maps: uint32(1 + rng.IntN(20))}
	for m := range s.maps {
		attempts := rng.IntN(3)
		for a := range uint32(attempts) {
			n := uint32(rng.IntN(6))
			var bytes uint64
			for seq := range n {
				p := raw(fmt.Sprintf("m%d a%d s%d %s", m, a, seq, strings.Repeat("x", rng.IntN(50))))
				bytes += uint64(len(p.data))
				for range 1 + rng.IntN(2) { // a retried push repeats a seq
					s.segs = append(s.segs, goldenSegment{m, a, seq, p})
				}
			}
			if a == uint32(attempts)-1 && rng.IntN(4) > 0 {
				s.commits = append(s.commits, AttemptCommit{Map: m, Attempt: a, Segments: n, Bytes: bytes})
			}
		}
	}
	rng.Shuffle(len(s.segs), func(i, j int) { s.segs[i], s.segs[j] = s.segs[j], s.segs[i] })
	return s
}

func (s *reduceSpec) build(t testing.TB, finalize bool) []byte {
	b, err := NewReduceBuilder(&ReduceHeader{Job: []byte("job"), Dataset: []byte("ds"), ReduceIndex: 1, MapCount: s.maps})
	must(t, err)
	file, err := b.AppendHeader(nil)
	must(t, err)
	for _, sg := range s.segs {
		sh := SegmentHeader{Map: sg.m, Attempt: sg.a, Seq: sg.seq, PayloadLength: uint32(len(sg.p.data)),
			UncompressedLength: uint32(len(sg.p.data)), PayloadCRC: Checksum(sg.p.data)}
		must(t, b.AddSegment(&sh))
		file = appendSegment(t, file, &sh, sg.p.data)
	}
	if finalize {
		file, _, err = b.Finalize(file, s.commits)
		must(t, err)
	}
	return file
}

func (s *reduceSpec) want() []string {
	var out []string
	seen := map[[3]uint32]bool{}
	for _, sg := range s.segs {
		for _, c := range s.commits {
			k := [3]uint32{sg.m, sg.a, sg.seq}
			if c.Map == sg.m && c.Attempt == sg.a && !seen[k] {
				seen[k] = true
				out = append(out, string(sg.p.data))
			}
		}
	}
	return out
}

func TestReducePartitionRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for iter := range 100 {
		s := randomReduceSpec(rng)
		file := s.build(t, true)
		sum, err := verifyChunked(file, 1+rng.IntN(300))
		if err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		if !sum.Reduce.Finalized || len(sum.Reduce.Commits) != len(s.commits) {
			t.Fatalf("iteration %d: %+v", iter, sum.Reduce)
		}
		p, err := OpenReducePartition(bytes.NewReader(file), int64(len(file)))
		must(t, err)
		if got, want := serveReduce(t, p, file), s.want(); !slices.Equal(got, want) {
			t.Fatalf("iteration %d: served %q, want %q", iter, got, want)
		}

		// The same pushes, never finalized and cut anywhere: recovery finds
		// the whole segments before the cut, resumes, and finalizes.
		open := s.build(t, false)
		cut := rng.IntN(len(open) + 1)
		v := NewReduceVerifier(ReduceVerifyOptions{AllowOpen: true})
		_, err = v.Write(open[:cut])
		must(t, err)
		rs, err := v.Finish()
		if err != nil {
			if cut < len(open) && errors.Is(err, ErrTruncated) && cut < 40 {
				continue // cut inside the file header
			}
			t.Fatalf("iteration %d: open file cut at %d: %v", iter, cut, err)
		}
		if rs.Finalized || rs.ValidLength > int64(cut) || (rs.TailError == nil) != (rs.ValidLength == int64(cut)) {
			t.Fatalf("iteration %d: cut at %d: %+v", iter, cut, rs)
		}
		if cut == len(open) {
			if err := CheckCommitted(rs.Attempts, s.commits); err != nil {
				t.Fatalf("iteration %d: whole open file misses commits: %v", iter, err)
			}
		}
		b, err := ResumeReduceBuilder(&rs)
		must(t, err)
		var commits []AttemptCommit
		for _, c := range s.commits {
			if CheckCommitted(rs.Attempts, []AttemptCommit{c}) == nil {
				commits = append(commits, c)
			}
		}
		resumed, _, err := b.Finalize(bytes.Clone(open[:rs.ValidLength]), commits)
		must(t, err)
		if _, err := verifyChunked(resumed, 4096); err != nil {
			t.Fatalf("iteration %d: resumed file: %v", iter, err)
		}
	}
}

func TestReduceVerifierFindsBadCommits(t *testing.T) {
	base := reduceSpec{maps: 2, segs: []goldenSegment{{0, 0, 0, raw("a")}, {0, 0, 1, raw("b")}, {1, 0, 0, raw("c")}}}
	for _, tc := range []struct {
		name    string
		commits []AttemptCommit
	}{
		{"too few segments", []AttemptCommit{{Map: 0, Attempt: 0, Segments: 1, Bytes: 1}}},
		{"too many segments", []AttemptCommit{{Map: 0, Attempt: 0, Segments: 3, Bytes: 3}}},
		{"wrong bytes", []AttemptCommit{{Map: 0, Attempt: 0, Segments: 2, Bytes: 3}}},
		{"wrong attempt", []AttemptCommit{{Map: 1, Attempt: 1, Segments: 1, Bytes: 1}}},
	} {
		s := base
		s.commits = tc.commits
		if _, err := verifyChunked(s.build(t, true), 4096); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// A repeated seq with different bytes.
	s := base
	s.segs = append(s.segs, goldenSegment{0, 0, 1, raw("B")})
	if _, err := verifyChunked(s.build(t, true), 4096); !errors.Is(err, ErrCorrupt) {
		t.Errorf("differing repeat: %v", err)
	}
	// The filter refuses a seq beyond the commit and notices missing ones.
	f, err := NewReduceFilter([]AttemptCommit{{Map: 0, Attempt: 0, Segments: 1, Bytes: 1}})
	must(t, err)
	if _, err := f.Admit(&SegmentHeader{Map: 0, Seq: 1, PayloadLength: 1}, 99); !errors.Is(err, ErrCorrupt) {
		t.Errorf("seq beyond commit: %v", err)
	}
	if err := f.Check(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("missing segment: %v", err)
	}
	if _, err := NewReduceFilter([]AttemptCommit{{Map: 1}, {Map: 0}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unsorted commits: %v", err)
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	job, ds := []byte("job-1"), bytes.Repeat([]byte{7}, MaxIDSize)
	records := []Record{
		{Kind: RecordMapCommitted, Job: job, Dataset: ds, Index: 4, Attempt: 2, FileLength: 1 << 40, FooterCRC: 0xfeedface},
		{Kind: RecordReduceCommitted, Job: job, Dataset: ds, Index: 9, Map: 3, Attempt: 1, Segments: 70, Bytes: 12345, FileLength: 99},
		{Kind: RecordReduceFinalized, Job: job, Dataset: ds, Index: 9, FileLength: 4096, FooterCRC: 1},
		{Kind: RecordReleased, Scope: ReleaseMap, Job: job, Dataset: ds, Index: 4, Attempt: 1},
		{Kind: RecordReleased, Scope: ReleaseReduce, Job: job, Dataset: ds, Index: 9},
		{Kind: RecordReleased, Scope: ReleaseDataset, Job: job, Dataset: ds},
		{Kind: RecordReleased, Scope: ReleaseJob, Job: job},
		{Kind: RecordSnapshotEnd, Records: 0},
	}
	log, err := AppendLogHeader(nil, &LogHeader{Disk: goldenDisk, Generation: 3, FirstLSN: 1})
	must(t, err)
	for i := range records {
		records[i].LSN, records[i].BatchPos = uint64(i+1), uint16(i%3)
		if records[i].Kind == RecordSnapshotEnd {
			records[i].Records = uint64(i)
		}
		log, err = AppendRecord(log, &records[i])
		must(t, err)
	}
	s, err := NewLogScanner(log)
	must(t, err)
	var i int
	for s.Next() {
		got := *s.Record()
		want := records[i]
		if want.Dataset == nil {
			want.Dataset = got.Dataset[:0:0]
			got.Dataset = got.Dataset[:0:0]
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("record %d: got %+v, want %+v", i, got, want)
		}
		i++
	}
	if s.Err() != nil || i != len(records) || s.End().ValidLength != int64(len(log)) {
		t.Fatalf("scanned %d records, end %+v, err %v", i, s.End(), s.Err())
	}
	for _, r := range []Record{
		{Kind: 0},
		{Kind: 6},
		{Kind: RecordMapCommitted, Job: job},
		{Kind: RecordReleased, Scope: 9, Job: job, Dataset: ds},
		{Kind: RecordReleased, Scope: ReleaseJob, Job: job, Dataset: ds},
		{Kind: RecordReleased, Scope: ReleaseDataset, Job: job, Dataset: ds, Index: 1},
		{Kind: RecordMapCommitted, Job: job, Dataset: ds, FileLength: -1},
	} {
		if _, err := AppendRecord(nil, &r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", r, err)
		}
	}
}

// testLog writes a generation-0 log of batches of MapCommitted records.
func testLog(t testing.TB, batches ...int) ([]byte, []int) {
	log, err := AppendLogHeader(nil, &LogHeader{Disk: goldenDisk, FirstLSN: 10})
	must(t, err)
	var starts []int
	lsn := uint64(10)
	for _, n := range batches {
		for pos := range n {
			starts = append(starts, len(log))
			log, err = AppendRecord(log, &Record{LSN: lsn, BatchPos: uint16(pos), Kind: RecordMapCommitted,
				Job: []byte("job"), Dataset: []byte("ds"), Index: uint32(lsn), FileLength: 100})
			must(t, err)
			lsn++
		}
	}
	return log, starts
}

func scanAll(b []byte) (LogEnd, error) {
	s, err := NewLogScanner(b)
	if err != nil {
		return LogEnd{}, err
	}
	for s.Next() {
	}
	return s.End(), s.Err()
}

func TestLogTornTailAndCorruption(t *testing.T) {
	log, starts := testLog(t, 3, 2, 2) // records 0-2, 3-4, 5-6
	end, err := scanAll(log)
	if err != nil || end.Records != 7 || end.TornBytes != 0 {
		t.Fatalf("clean log: %+v, %v", end, err)
	}
	flip := func(i int) []byte { b := bytes.Clone(log); b[i] ^= 0x40; return b }
	for _, tc := range []struct {
		name    string
		b       []byte
		records uint64
		torn    bool
		corrupt bool
	}{
		{"cut inside the last record", log[:len(log)-5], 6, true, false},
		{"cut inside a record header", log[:starts[6]+3], 6, true, false},
		{"zero padding", append(bytes.Clone(log), make([]byte, 100)...), 7, false, false},
		{"padding then garbage", append(append(bytes.Clone(log), make([]byte, 10)...), 1), 7, true, false},
		{"damage in the last write, first record", flip(starts[5] + 20), 5, true, false},
		{"damage in the last write, last record", flip(starts[6] + 20), 6, true, false},
		{"last write's first sector missing", zeroRange(log, starts[5], starts[6]), 5, true, false},
		{"damage in an earlier write", flip(starts[1] + 20), 0, false, true},
		{"damage at the end of an earlier write", flip(starts[4] + 20), 0, false, true},
		{"lost first record of an earlier write", zeroRange(log, starts[3], starts[4]), 0, false, true},
	} {
		end, err := scanAll(tc.b)
		if tc.corrupt {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: %+v, %v", tc.name, end, err)
			}
			continue
		}
		if err != nil || end.Records != tc.records || (end.TornBytes > 0) != tc.torn {
			t.Errorf("%s: %+v, %v; want %d records, torn %v", tc.name, end, err, tc.records, tc.torn)
		}
	}
	// A record whose CRC holds but whose LSN skips is corrupt, not torn.
	b := bytes.Clone(log)
	binary.LittleEndian.PutUint64(b[starts[6]+recLSNOff:], 99)
	binary.LittleEndian.PutUint32(b[starts[6]:], Checksum(b[starts[6]+recLengthOff:]))
	if _, err := scanAll(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("skipped LSN: %v", err)
	}
}

func zeroRange(b []byte, from, to int) []byte {
	b = bytes.Clone(b)
	clear(b[from:to])
	return b
}

func TestLogSnapshotRules(t *testing.T) {
	build := func(gen uint64, kinds ...RecordKind) []byte {
		log, err := AppendLogHeader(nil, &LogHeader{Disk: goldenDisk, Generation: gen, FirstLSN: 1})
		must(t, err)
		for i, k := range kinds {
			r := Record{LSN: uint64(i + 1), Kind: k, Job: []byte("j"), Dataset: []byte("d"), Records: uint64(i)}
			log, err = AppendRecord(log, &r)
			must(t, err)
		}
		return log
	}
	m, e := RecordMapCommitted, RecordSnapshotEnd
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"fresh log", build(0, m, m), true},
		{"compacted log", build(2, m, e, m), true},
		{"empty compacted log", build(1, e), true},
		{"compacted log without its snapshot end", build(1, m, m), false},
		{"snapshot end in a fresh log", build(0, m, e), false},
		{"two snapshot ends", build(1, e, e), false},
	} {
		_, err := scanAll(tc.b)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestVerifierKinds(t *testing.T) {
	if _, err := Verify(bytes.NewReader([]byte("not a sluice file at all")), nil, VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("foreign file: %v", err)
	}
	if _, err := Verify(bytes.NewReader([]byte("SLU")), nil, VerifyOptions{}); !errors.Is(err, ErrTruncated) {
		t.Errorf("3 bytes: %v", err)
	}
	if k, n, err := HeaderLength([]byte("SLUICEMP\x01\x00\x00\x00\x10\x00\x00\x00")); err == nil || k != KindMapPartition || n != 0 {
		t.Errorf("header length 16: %v %d %v", k, n, err)
	}
}

// TestDescribeShortHeaders describes files whose header length is valid for
// the prefix but too short for the kind's fields (found by FuzzDescribe).
func TestDescribeShortHeaders(t *testing.T) {
	for _, magic := range []string{magicMapPartition, magicReducePartition, magicDiskIdentity, magicCommitLog} {
		b := append([]byte(magic), 1, 0, 0, 0, 25, 0, 0, 0)
		b = append(b, 0, 0, 0, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, Checksum(b))
		var out bytes.Buffer
		must(t, Describe(&out, bytes.NewReader(b), int64(len(b)), DescribeOptions{}))
		if !strings.Contains(out.String(), "verify: layout: corrupt") || !strings.Contains(out.String(), "!!") {
			t.Errorf("%s:\n%s", magic, out.String())
		}
	}
}

func TestDescribeCorrupt(t *testing.T) {
	b := bytes.Clone(readGolden(t, "mappartition.bin"))
	b[400] ^= 0xff // a broadcast buffer's payload length
	for _, tc := range []struct {
		max  int
		want []string
	}{
		{0, []string{"verify: layout: corrupt MapPartition at offset 391", "0x966a8074 (BAD: computed", "the walk stops here"}},
		{3, []string{"stopped after 3 items"}},
	} {
		var out bytes.Buffer
		must(t, Describe(&out, bytes.NewReader(b), int64(len(b)), DescribeOptions{MaxItems: tc.max}))
		for _, want := range tc.want {
			if !strings.Contains(out.String(), want) {
				t.Errorf("describe output lacks %q:\n%s", want, out.String())
			}
		}
	}
}

// TestCatalog replays the golden commit log, checks the golden partition
// files against it, compacts it and replays the compacted log.
func TestCatalog(t *testing.T) {
	log := readGolden(t, "commitlog.bin")
	c, h, end, err := ReplayLog(log)
	must(t, err)
	if h.Generation != 1 || end.Records != 9 || len(c.Maps) != 1 || len(c.Reduces) != 1 {
		t.Fatalf("catalog %+v, header %+v, end %+v", c, h, end)
	}
	mk := MapKey{"wordcount-2026", "ds-7", 3, 1}
	rk := ReduceKey{"wordcount-2026", "ds-8", 5}
	if st := c.Reduces[rk]; st == nil || !st.Finalized || len(st.Commits) != 4 {
		t.Fatalf("reduce state %+v", st)
	}
	ms := verifyOK(t, readGolden(t, "mappartition.bin")).Map
	rs := verifyOK(t, readGolden(t, "reducepartition.bin")).Reduce
	must(t, c.CheckMap(mk, ms))
	must(t, c.CheckReduce(rk, rs))
	if err := c.CheckMap(MapKey{"wordcount-2026", "ds-7", 3, 0}, ms); !errors.Is(err, ErrUncommitted) || errors.Is(err, ErrCorrupt) {
		t.Errorf("released attempt: %v", err)
	}
	for _, p := range []string{mk.Path(), rk.Path()} {
		pp := ParsePath(p)
		if pp.Kind == PathOther || (pp.Kind == PathMap && pp.Map != mk) || (pp.Kind == PathReduce && pp.Reduce != rk) {
			t.Errorf("ParsePath(%q) = %+v", p, pp)
		}
	}
	for _, p := range []string{"data/x/y/map-1-2", "data/d8/cg/map-01-2", "data/d8/cg/reduce-", "data/d8/cg/map-1", "tmp", "data/d8/cg/x/reduce-1"} {
		if pp := ParsePath(p); pp.Kind != PathOther {
			t.Errorf("ParsePath(%q) = %+v", p, pp)
		}
	}
	if ParsePath("COMMITLOG").Kind != PathCommitLog || ParsePath("IDENTITY").Kind != PathDiskIdentity {
		t.Errorf("per-disk files")
	}

	compacted, next, err := c.AppendSnapshot(nil, LogHeader{Disk: h.Disk, Generation: h.Generation + 1, FirstLSN: 100 + end.Records})
	must(t, err)
	c2, h2, end2, err := ReplayLog(compacted)
	must(t, err)
	if h2.Generation != 2 || next != 109+end2.Records || fmt.Sprint(c2.Maps) == "" || len(c2.Maps) != 1 || len(c2.Reduces) != 1 {
		t.Fatalf("compacted: %+v %+v %d", h2, end2, next)
	}
	if c2.Maps[mk].FileLength != c.Maps[mk].FileLength || c2.Reduces[rk].FooterCRC != c.Reduces[rk].FooterCRC {
		t.Errorf("compacted catalog differs: %+v %+v", c2.Maps, c2.Reduces[rk])
	}

	// An open ReducePartition against its commits.
	s := reduceSpec{maps: 2, segs: []goldenSegment{{0, 0, 0, raw("a")}, {1, 0, 0, raw("b")}, {0, 0, 1, raw("c")}},
		commits: []AttemptCommit{{Map: 0, Attempt: 0, Segments: 2, Bytes: 2}}}
	open := s.build(t, false)
	oc := NewCatalog()
	must(t, oc.Apply(&Record{Kind: RecordReduceCommitted, Job: []byte("job"), Dataset: []byte("ds"), Index: 1,
		Map: 0, Attempt: 0, Segments: 2, Bytes: 2, FileLength: int64(len(open))}, 0))
	ok := ReduceKey{"job", "ds", 1}
	for _, tc := range []struct {
		cut  int
		good bool
	}{{len(open), true}, {len(open) - 1, false}, {len(open) - 33, false}} {
		v := NewReduceVerifier(ReduceVerifyOptions{AllowOpen: true})
		_, err := v.Write(open[:tc.cut])
		must(t, err)
		sum, err := v.Finish()
		must(t, err)
		if err := oc.CheckReduce(ok, &sum); (err == nil) != tc.good {
			t.Errorf("open file cut at %d of %d: %v", tc.cut, len(open), err)
		}
	}
	// Contradicting records are corruption.
	if err := oc.Apply(&Record{Kind: RecordReduceCommitted, Job: []byte("job"), Dataset: []byte("ds"), Index: 1,
		Map: 0, Attempt: 1, Segments: 1, Bytes: 1}, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("second attempt of map 0 committed: %v", err)
	}
	// A file that names another partition than its path is corrupt.
	if err := c.CheckMap(mk, &MapSummary{Header: MapHeader{Job: []byte("other"), Dataset: []byte("ds-7"), MapIndex: 3, Attempt: 1}}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("foreign file: %v", err)
	}
	must(t, oc.Apply(&Record{Kind: RecordReleased, Scope: ReleaseJob, Job: []byte("job")}, 0))
	if len(oc.Reduces) != 0 {
		t.Errorf("job release left %v", oc.Reduces)
	}
}

// logTranscript is what a scan found: each record, then how the log ends.
func logTranscript(s *LogScanner, err error) string {
	if err != nil {
		return "header: " + err.Error()
	}
	var b strings.Builder
	for s.Next() {
		r := s.Record()
		fmt.Fprintf(&b, "%d: %d %v %d %q %q %d %d\n", s.Offset(), r.LSN, r.Kind, r.BatchPos, r.Job, r.Dataset, r.Index, r.FileLength)
	}
	fmt.Fprintf(&b, "end %+v, err %v", s.End(), s.Err())
	return b.String()
}

// TestLogStreamScanner checks that a log streamed through windows of
// several sizes scans exactly as in memory: clean, padded, torn, and
// corrupt early with the proof (a later write) far beyond the window.
func TestLogStreamScanner(t *testing.T) {
	var batches []int
	for i := range 300 {
		batches = append(batches, 1+i%5)
	}
	log, starts := testLog(t, batches...)
	last := len(starts) - 1
	flip := func(i int) []byte { b := bytes.Clone(log); b[i] ^= 0x40; return b }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"clean", log},
		{"zero padding beyond a window", append(bytes.Clone(log), make([]byte, 3*logWindow+5)...)},
		{"padding then garbage beyond a window", append(append(bytes.Clone(log), make([]byte, 2*logWindow)...), 1, 2, 3)},
		{"torn last record", log[:len(log)-5]},
		{"damage in the last write", flip(starts[last] + 20)},
		{"damage in the first write", flip(starts[0] + 20)},
		{"lost first record of an early write", zeroRange(log, starts[1], starts[2])},
		{"header only", log[:starts[0]]},
		{"cut header", log[:starts[0]-1]},
	} {
		want := logTranscript(NewLogScanner(tc.b))
		for _, w := range []int{0, maxRecordSize + 7, 4096, logWindow} {
			if got := logTranscript(newLogStreamScanner(bytes.NewReader(tc.b), int64(len(tc.b)), w)); got != want {
				t.Errorf("%s, window %d: streamed\n%s\nin memory\n%s", tc.name, w, got, want)
			}
		}
	}
	// A failed read ends the scan with that error.
	s, err := NewLogStreamScanner(&failingReaderAt{b: log, failAt: int64(starts[100])}, int64(len(log)))
	must(t, err)
	n := 0
	for s.Next() {
		n++
	}
	if !errors.Is(s.Err(), errInjected) || n >= 100 {
		t.Fatalf("read failure: %d records, err %v", n, s.Err())
	}
}

var errInjected = errors.New("injected read failure")

// failingReaderAt fails every read that reaches failAt.
type failingReaderAt struct {
	b      []byte
	failAt int64
}

func (r *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.failAt {
		return 0, errInjected
	}
	return copy(p, r.b[off:]), nil
}

// zeroTail is a log followed by a long run of zeros, generated on read: a
// large commit log that is never in memory.
type zeroTail struct {
	log  []byte
	size int64
}

func (z *zeroTail) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.size {
		return 0, io.EOF
	}
	n := copy(p, z.log[min(off, int64(len(z.log))):])
	rest := p[n:]
	m := int(min(int64(len(rest)), z.size-off-int64(n)))
	clear(rest[:m])
	if n+m < len(p) {
		return n + m, io.EOF
	}
	return n + m, nil
}

// TestLogStreamScannerBoundedMemory scans a 256 MiB log (its records, then
// zero padding) streamed: it allocates its window, not the log.
func TestLogStreamScannerBoundedMemory(t *testing.T) {
	log, starts := testLog(t, 3, 2, 2)
	z := &zeroTail{log: log, size: 256 << 20}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s, err := NewLogStreamScanner(z, z.size)
	must(t, err)
	for s.Next() {
	}
	runtime.ReadMemStats(&after)
	if s.Err() != nil || s.End().Records != uint64(len(starts)) || s.End().Padding != z.size-int64(len(log)) {
		t.Fatalf("end %+v, err %v", s.End(), s.Err())
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > 1<<20 {
		t.Fatalf("scanning allocated %d bytes", a)
	}
}

// TestDescribeCommitLogBoundedMemory describes a 256 MiB commit log (its
// records, then zero padding) in bounded memory, and returns a read error.
func TestDescribeCommitLogBoundedMemory(t *testing.T) {
	log, starts := testLog(t, 3, 2, 2)
	z := &zeroTail{log: log, size: 256 << 20}
	var out strings.Builder
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	must(t, Describe(&out, z, z.size, DescribeOptions{}))
	runtime.ReadMemStats(&after)
	if a := after.TotalAlloc - before.TotalAlloc; a > 2<<20 {
		t.Errorf("describing allocated %d bytes", a)
	}
	padding := fmt.Sprintf("%d-%d  zero padding after the last record (%d bytes)", len(log), z.size, z.size-int64(len(log)))
	if got := out.String(); !strings.Contains(got, "verify: OK") || strings.Count(got, ": MapCommitted") != len(starts) || !strings.Contains(got, padding) {
		t.Errorf("description:\n%s", got)
	}
	err := Describe(io.Discard, &failingReaderAt{b: log, failAt: int64(starts[4])}, int64(len(log)), DescribeOptions{})
	if !errors.Is(err, errInjected) {
		t.Errorf("describe over a failing read: %v", err)
	}
}
