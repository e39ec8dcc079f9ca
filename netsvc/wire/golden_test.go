package wire

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// The golden vectors of the protocol live in testdata/protocol/: one
// binary file per message kind (a whole frame, header and body) with its
// describer output beside it, and invalid frames in invalid/ with the error
// a receiver answers. The Java client runs the same files.
//
//	go test ./netsvc/... -update    regenerates the vectors, their *.txt and the body tables of PROTOCOL.md
//
// Without -update, TestGoldenGenerator checks that the generator still
// writes the committed files byte for byte, so an accidental change of the
// protocol fails here first. Once 1.0 is released its vectors are never
// regenerated: they must decode forever.
var update = flag.Bool("update", false, "rewrite the golden vectors, their descriptions and PROTOCOL.md's body tables")

const (
	goldenDir   = "../../testdata/protocol"
	protocolDoc = "../PROTOCOL.md"
)

var (
	goldenWorker  = [16]byte{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf}
	goldenJob     = []byte("wordcount-2026")
	goldenDataset = []byte("ds-7")
	v1            = V1_0.HeaderVersion()
)

// entry is one record-framing entry of a golden payload.
type entry struct {
	data string
	more bool
}

func recs(ss ...string) []entry {
	var es []entry
	for _, s := range ss {
		es = append(es, entry{data: s})
	}
	return es
}

func payloadOf(es []entry) []byte {
	var p []byte
	for _, e := range es {
		p = AppendFragment(p, []byte(e.data), e.more)
	}
	return p
}

// compress returns the LZ4 block of p, or nil when it does not shrink.
func compress(p []byte) []byte {
	var c lz4.Compressor
	dst := make([]byte, len(p))
	n, err := c.CompressBlock(p, dst[:len(p)-1])
	if err != nil || n == 0 {
		return nil
	}
	return dst[:n]
}

// goldenBuffer builds a stored buffer of the entries: LZ4 when it shrinks
// (and lz4 is asked for), else raw (with the raw-fallback flag when LZ4
// was tried).
func goldenBuffer(sub uint32, es []entry, tryLZ4 bool) []byte {
	raw := payloadOf(es)
	h := BufferHeader{Subpartition: sub, Codec: CodecNone, PayloadLength: uint32(len(raw)), UncompressedLength: uint32(len(raw))}
	stored := raw
	if tryLZ4 {
		if c := compress(raw); c != nil {
			stored = c
			h.Codec, h.PayloadLength = CodecLZ4, uint32(len(c))
		} else {
			h.Flags = FlagRawFallback
		}
	}
	h.PayloadCRC = Checksum(stored)
	b := make([]byte, BufferHeaderSize, BufferHeaderSize+len(stored))
	if err := PutBufferHeader(b, &h); err != nil {
		panic(err)
	}
	return append(b, stored...)
}

func goldenSegment(mapIndex, attempt, seq uint32, es []entry) []byte {
	raw := payloadOf(es)
	h := SegmentHeader{Map: mapIndex, Attempt: attempt, Seq: seq, Codec: CodecNone, PayloadLength: uint32(len(raw)), UncompressedLength: uint32(len(raw))}
	stored := raw
	if c := compress(raw); c != nil {
		stored = c
		h.Codec, h.PayloadLength = CodecLZ4, uint32(len(c))
	} else {
		h.Flags = FlagRawFallback
	}
	h.PayloadCRC = Checksum(stored)
	b := make([]byte, SegmentHeaderSize, SegmentHeaderSize+len(stored))
	if err := PutSegmentHeader(b, &h); err != nil {
		panic(err)
	}
	return append(b, stored...)
}

// Incompressible record bytes: a fixed pseudo-random sequence (xorshift).
func noise(n int, seed uint32) string {
	b := make([]byte, n)
	x := seed
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return string(b)
}

var words = "the quick brown fox jumps over the lazy dog; the quick brown fox jumps again"

type goldenVector struct {
	name    string
	version uint8
	channel uint32
	msg     Message
}

func goldenVectors() []goldenVector {
	totals := WriteTotals{Regions: 2, Buffers: 9, StoredBytes: 4711, HeadersCRC: 0x1234abcd}
	// A record split over two buffers of subpartition 4: the first ends
	// with a fragment, the second starts with the rest.
	big := strings.Repeat("shuffle ", 12)
	readBufs := append(goldenBuffer(4, []entry{{data: "alpha"}, {data: big[:40], more: true}}, true),
		goldenBuffer(4, []entry{{data: big[40:]}, {data: "omega"}}, true)...)
	readSegs := append(goldenSegment(2, 0, 0, recs("red", "green", "blue", "red", "green", "blue")),
		goldenSegment(5, 1, 0, recs("cyan", "magenta"))...)
	return []goldenVector{
		{"hello", 0, 0, &Hello{VersionMin: V1_0, VersionMax: V1_0, MaxFrameBytes: DefaultFrameLimit,
			ClientID: []byte("flink-tm-7@host-3"), AuthToken: []byte("s3cr3t-token")}},
		{"hello_ack", 0, 0, &HelloAck{Version: V1_0, WorkerID: goldenWorker, MaxFrameBytes: DefaultFrameLimit,
			MaxChannels: DefaultMaxChannels, MemoryBytes: DefaultConnectionMemory, HeartbeatMillis: 5000,
			IdleTimeoutMillis: 30000, ServerName: []byte("sluice 1.0 worker-3:7077")}},
		{"error_version", 0, 0, &ErrorMsg{Code: CodeVersion, Fatal: true, VersionMin: V1_0, VersionMax: V1_0,
			Message: []byte(VersionMismatchMessage(MakeVersion(2, 0), MakeVersion(2, 1), V1_0, V1_0))}},
		{"error_channel", v1, 9, &ErrorMsg{Code: CodePartitionNotFound, VersionMin: V1_0, VersionMax: V1_0,
			Message: []byte("no committed MapPartition wordcount-2026/ds-7 map 3 attempt 1 on this worker")}},
		{"heartbeat", v1, 0, &Heartbeat{}},
		{"close_connection", v1, 0, &CloseConnection{TimeoutMillis: 30000}},
		{"credit_batch", v1, 0, &CreditBatch{Entries: []CreditEntry{{7, 4 << 20}, {9, 65536}, {12, 1 << 20}}}},
		{"credit", v1, 7, &Credit{Bytes: 4 << 20}},
		{"close_channel", v1, 9, &CloseChannel{Reason: CodeCorruptData, Message: []byte("buffer 12: payload CRC mismatch")}},
		{"channel_closed", v1, 9, &ChannelClosed{}},
		{"write_open", v1, 7, &WriteOpen{Map: 3, Attempt: 1, Subpartitions: 8, Codec: CodecLZ4,
			MaxBufferBytes: 32<<10 + BufferHeaderSize, SizeHint: 1 << 20, Job: goldenJob, Dataset: goldenDataset}},
		{"write_opened", v1, 7, &WriteOpened{Credit: 4 << 20}},
		{"region_start", v1, 7, &RegionStart{Region: 0, RecordBytes: 4096}},
		{"region_start_broadcast", v1, 7, &RegionStart{Region: 1, Broadcast: true, RecordBytes: 64}},
		{"write_data", v1, 7, &WriteData{Stored: goldenBuffer(2, recs(words, words, "fox", ""), true)}},
		{"write_data_raw", v1, 7, &WriteData{Stored: goldenBuffer(5, recs(noise(24, 1), noise(9, 2)), true)}},
		{"write_data_broadcast", v1, 7, &WriteData{Stored: goldenBuffer(AllSubpartitions, recs("end-of-partition"), false)}},
		{"region_finish", v1, 7, &RegionFinish{Region: 0, Buffers: 2, StoredBytes: 147}},
		{"write_finish", v1, 7, &WriteFinish{totals}},
		{"write_committed", v1, 7, &WriteCommitted{WriteTotals: totals, FileLength: 5120, FooterCRC: 0x89abcdef}},
		{"push_open", v1, 11, &PushOpen{Reduce: 4, Map: 2, Attempt: 0, Maps: 64, Codec: CodecLZ4,
			MaxSegmentBytes: 32<<10 + SegmentHeaderSize, Job: goldenJob, Dataset: goldenDataset}},
		{"push_opened", v1, 11, &PushOpened{Credit: 1 << 20, Held: 0}},
		{"push_data", v1, 11, &PushData{Stored: goldenSegment(2, 0, 0, recs("red", "green", "blue", "red", "green", "blue"))}},
		{"push_ack", v1, 11, &PushAck{Held: 1}},
		{"push_commit", v1, 11, &PushCommit{Segments: 1, PayloadBytes: 31}},
		{"push_committed", v1, 11, &PushCommitted{Segments: 1, PayloadBytes: 31}},
		{"push_abort", v1, 11, &PushAbort{}},
		{"push_aborted", v1, 11, &PushAborted{}},
		{"read_open", v1, 13, &ReadOpen{Kind: PartitionMap, Index: 3, Attempt: 1, SubStart: 4, SubEnd: 6,
			Credit: 256 << 10, Job: goldenJob, Dataset: goldenDataset}},
		{"read_open_reduce", v1, 14, &ReadOpen{Kind: PartitionReduce, Index: 4, Credit: 256 << 10, Job: goldenJob, Dataset: goldenDataset}},
		{"read_opened", v1, 13, &ReadOpened{TotalBytes: uint64(len(readBufs)), Count: 8}},
		{"read_data", v1, 13, &ReadData{ReadDataFields{Backlog: 0, Next: 0}, readBufs}},
		{"read_data_backlog", v1, 13, &ReadData{ReadDataFields{Backlog: 1 << 20, Next: 32<<10 + BufferHeaderSize}, nil}},
		{"read_data_reduce", v1, 14, &ReadData{ReadDataFields{Backlog: 0, Next: 0}, readSegs}},
		{"read_end", v1, 13, &ReadEnd{Items: 2, StoredBytes: uint64(len(readBufs))}},
	}
}

// invalidVector is a frame a receiver refuses, with the error it answers.
type invalidVector struct {
	name     string
	desc     string
	receiver Side
	version  uint8 // negotiated major; 0 = during the handshake
	frame    []byte
	code     Code
	channel  uint32
	fatal    bool
}

func invalidVectors() []invalidVector {
	credit := (&Credit{Bytes: 65536}).AppendFrame(nil, v1, 7)
	mut := func(b []byte, f func([]byte)) []byte { b = bytes.Clone(b); f(b); return b }
	reHeader := func(b []byte) { PutHeader(b, mustHeader(b)) }
	writeOpen := (&WriteOpen{Map: 3, Attempt: 1, Subpartitions: 8, Codec: CodecLZ4, MaxBufferBytes: 32 << 10,
		Job: goldenJob, Dataset: goldenDataset}).AppendFrame(nil, v1, 7)
	badPayload := goldenBuffer(2, recs(words), true)
	badPayload[len(badPayload)-1] ^= 0x10
	hello := (&Hello{VersionMin: V1_0, VersionMax: V1_0, MaxFrameBytes: DefaultFrameLimit}).AppendFrame(nil)
	return []invalidVector{
		{"bad_header_crc", "CREDIT with one bit of its channel flipped", SideServer, v1,
			mut(credit, func(b []byte) { b[4] ^= 1 }), CodeBadHeaderCRC, 0, true},
		{"bad_body_crc", "CREDIT with one bit of its body flipped", SideServer, v1,
			mut(credit, func(b []byte) { b[HeaderSize+1] ^= 1 }), CodeBadBodyCRC, 7, false},
		{"unknown_type", "type 0x7f on channel 7, 4 body bytes", SideServer, v1,
			AppendHeader([]byte(nil), Header{Version: v1, Type: 0x7f, Channel: 7, Length: 4, BodyCRC: Checksum([]byte{1, 2, 3, 4})}), CodeUnknownType, 7, false},
		{"unknown_type_connection", "type 0x7f on channel 0: answered, the connection stays", SideServer, v1,
			AppendHeader([]byte(nil), Header{Version: v1, Type: 0x7f, Channel: 0}), CodeUnknownType, 0, false},
		{"reserved_nonzero", "CREDIT whose reserved header byte is 1", SideServer, v1,
			mut(credit, func(b []byte) { b[3] = 1; reHeaderRaw(b) }), CodeMalformed, 7, false},
		{"flags_nonzero", "CREDIT with frame flag bit 0 set (no flags in 1.0)", SideServer, v1,
			mut(credit, func(b []byte) { b[2] = 1; reHeaderRaw(b) }), CodeMalformed, 7, false},
		{"wrong_version", "CREDIT with version byte 2 on a 1.x connection", SideServer, v1,
			mut(credit, func(b []byte) { b[0] = 2; reHeaderRaw(b) }), CodeVersion, 0, true},
		{"control_too_large", "CREDIT header announcing a 65,537-byte body (body omitted)", SideServer, v1,
			AppendHeader([]byte(nil), Header{Version: v1, Type: TypeCredit, Channel: 7, Length: MaxControlBody + 1}), CodeFrameTooLarge, 0, true},
		{"data_too_large", "WRITE_DATA header announcing a body above the default frame limit (body omitted)", SideServer, v1,
			AppendHeader([]byte(nil), Header{Version: v1, Type: TypeWriteData, Channel: 7, Length: DefaultFrameLimit + 1}), CodeFrameTooLarge, 0, true},
		{"bad_magic", "HELLO whose magic is SLUICEXX", SideServer, 0,
			mut(hello, func(b []byte) { copy(b[HeaderSize+6:], "XX"); reHeader(b) }), CodeBadMagic, 0, true},
		{"hello_empty_range", "HELLO with version min 2.0 above version max 1.0", SideServer, 0,
			mut(hello, func(b []byte) { b[HeaderSize+10] = 2; reHeader(b) }), CodeMalformed, 0, true},
		{"hello_after_handshake", "a second HELLO", SideServer, v1, hello, CodeProtocol, 0, true},
		{"frame_before_handshake", "CREDIT before HELLO_ACK", SideServer, 0, credit, CodeProtocol, 0, true},
		{"credit_zero", "CREDIT granting 0 bytes", SideServer, v1,
			(&Credit{}).AppendFrame(nil, v1, 7), CodeMalformed, 7, false},
		{"write_open_trailing", "WRITE_OPEN with one byte after its dataset id", SideServer, v1,
			mut(append(bytes.Clone(writeOpen), 0), func(b []byte) { reBody(b) }), CodeMalformed, 7, false},
		{"write_open_no_subpartitions", "WRITE_OPEN with subpartition count 0", SideServer, v1,
			mut(writeOpen, func(b []byte) { copy(b[HeaderSize+8:], []byte{0, 0, 0, 0}); reBody(b) }), CodeMalformed, 7, false},
		{"connection_type_on_channel", "HEARTBEAT on channel 3", SideServer, v1,
			AppendHeader([]byte(nil), Header{Version: v1, Type: TypeHeartbeat, Channel: 3}), CodeMalformed, 3, false},
		{"channel_type_on_connection", "CREDIT on channel 0", SideServer, v1,
			(&Credit{Bytes: 1}).AppendFrame(nil, v1, 0), CodeMalformed, 0, true},
		{"server_type_from_client", "WRITE_OPENED received by a server", SideServer, v1,
			(&WriteOpened{Credit: 1}).AppendFrame(nil, v1, 7), CodeOutOfOrder, 7, false},
		{"client_error_on_channel", "ERROR on channel 7 received by a server (clients use CLOSE_CHANNEL)", SideServer, v1,
			(&ErrorMsg{Code: CodeInternal}).AppendFrame(nil, v1, 7), CodeOutOfOrder, 7, false},
		{"write_data_corrupt_payload", "WRITE_DATA whose payload has one flipped bit", SideServer, v1,
			(&WriteData{Stored: badPayload}).AppendFrame(nil, v1, 7), CodeCorruptData, 7, false},
		{"write_data_two_buffers", "WRITE_DATA carrying two buffers", SideServer, v1,
			(&WriteData{Stored: append(goldenBuffer(1, recs("a"), false), goldenBuffer(1, recs("b"), false)...)}).AppendFrame(nil, v1, 7), CodeCorruptData, 7, false},
		{"read_data_truncated_buffer", "READ_DATA whose buffer is cut short", SideClient, v1,
			(&ReadData{Stored: goldenBuffer(4, recs(words), true)[:30]}).AppendFrame(nil, v1, 13), CodeCorruptData, 13, false},
	}
}

func mustHeader(b []byte) Header {
	h := Header{Version: b[0], Type: Type(b[1]), Flags: b[2], Channel: le32get(b[4:]), Length: le32get(b[8:])}
	fields := b[HeaderSize:]
	if info := typeInfos[h.Type]; info.Data {
		fields = fields[:info.Fields]
	}
	h.BodyCRC = Checksum(fields)
	return h
}

func le32get(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// reHeaderRaw recomputes the header CRC after a header byte was changed.
func reHeaderRaw(b []byte) {
	c := Checksum(b[:hdrCRCOff])
	b[hdrCRCOff], b[hdrCRCOff+1], b[hdrCRCOff+2], b[hdrCRCOff+3] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
}

// reBody fixes the body length and body CRC after a body was changed.
func reBody(b []byte) {
	h := mustHeader(b)
	h.Length = uint32(len(b) - HeaderSize)
	PutHeader(b, h)
}

func checkInvalid(v invalidVector) error {
	_, _, _, err := DecodeFrame(v.frame, HeaderRules{Version: v.version, MaxFrameBytes: DefaultFrameLimit, Receiver: v.receiver})
	return err
}

func expectLine(v invalidVector) string {
	scope := "not fatal"
	if v.fatal {
		scope = "fatal"
	}
	return "expect: " + v.code.Name() + " channel " + itoa(v.channel) + " " + scope +
		"; receiver " + v.receiver.String() + ", negotiated major " + itoa(uint32(v.version)) + "\n"
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// generate returns every golden file: name → contents.
func generate(t testing.TB) map[string][]byte {
	files := map[string][]byte{}
	for _, v := range goldenVectors() {
		frame := AppendFrame(nil, v.version, v.channel, v.msg)
		files[v.name+".bin"] = frame
		files[v.name+".txt"] = []byte(Describe(frame))
	}
	for _, v := range invalidVectors() {
		files["invalid/"+v.name+".bin"] = v.frame
		files["invalid/"+v.name+".txt"] = []byte(expectLine(v) + "# " + v.desc + "\n" + Describe(v.frame))
	}
	return files
}

func TestGoldenVectorsDecodeAndReencode(t *testing.T) {
	for _, v := range goldenVectors() {
		b, err := os.ReadFile(filepath.Join(goldenDir, v.name+".bin"))
		if err != nil {
			t.Fatalf("%v (regenerate with go test ./netsvc/... -update)", err)
		}
		rules := HeaderRules{Version: v.version, MaxFrameBytes: DefaultFrameLimit}
		h, m, n, err := DecodeFrame(b, rules)
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		if n != len(b) {
			t.Fatalf("%s: frame of %d bytes in a file of %d", v.name, n, len(b))
		}
		if m.Type() != v.msg.Type() || h.Channel != v.channel {
			t.Fatalf("%s: decoded %v on channel %d", v.name, m.Type(), h.Channel)
		}
		if again := AppendFrame(nil, h.Version, h.Channel, m); !bytes.Equal(again, b) {
			t.Fatalf("%s: re-encoding differs:\n got %x\nwant %x", v.name, again, b)
		}
		// Every type's own AppendFrame writes the same bytes.
		if own := appendOwn(m, h.Version, h.Channel); !bytes.Equal(own, b) {
			t.Fatalf("%s: the type's AppendFrame differs", v.name)
		}
	}
}

// appendOwn calls the message type's own AppendFrame method.
func appendOwn(m Message, version uint8, channel uint32) []byte {
	switch m := m.(type) {
	case *Hello:
		return m.AppendFrame(nil)
	case *HelloAck:
		return m.AppendFrame(nil)
	case *Heartbeat:
		return m.AppendFrame(nil, version)
	case *CloseConnection:
		return m.AppendFrame(nil, version)
	case *CreditBatch:
		return m.AppendFrame(nil, version)
	case interface {
		AppendFrame([]byte, uint8, uint32) []byte
	}:
		return m.AppendFrame(nil, version, channel)
	}
	panic("no AppendFrame")
}

func TestGoldenCoversEveryType(t *testing.T) {
	seen := map[Type]bool{}
	for _, v := range goldenVectors() {
		seen[v.msg.Type()] = true
	}
	for _, ty := range Types() {
		if !seen[ty] {
			t.Errorf("no golden vector of %v", ty)
		}
	}
}

func TestInvalidVectors(t *testing.T) {
	for _, v := range invalidVectors() {
		b, err := os.ReadFile(filepath.Join(goldenDir, "invalid", v.name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		v.frame = b
		err = checkInvalid(v)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: error %v, want an *Error %v", v.name, err, v.code.Name())
			continue
		}
		if e.Code != v.code || e.Channel != v.channel || e.Fatal != v.fatal {
			t.Errorf("%s: %v (code %v channel %d fatal %v), want %v channel %d fatal %v",
				v.name, e, e.Code, e.Channel, e.Fatal, v.code, v.channel, v.fatal)
		}
	}
}

func TestGoldenGenerator(t *testing.T) {
	files := generate(t)
	if *update {
		for name, b := range files {
			p := filepath.Join(goldenDir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(goldenDir, name))
		if err != nil {
			t.Fatalf("%v (regenerate with go test ./netsvc/... -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the generator writes (a protocol change? regenerate with -update only before 1.0 is released)", name)
		}
	}
	// Nothing else lies in the directory, and the README lists every vector.
	readme, err := os.ReadFile(filepath.Join(goldenDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"", "invalid"} {
		entries, err := os.ReadDir(filepath.Join(goldenDir, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := filepath.ToSlash(filepath.Join(dir, e.Name()))
			if e.IsDir() || name == "README.md" {
				continue
			}
			if _, ok := files[name]; !ok {
				t.Errorf("%s: not made by the generator", name)
			}
			if strings.HasSuffix(name, ".bin") && !bytes.Contains(readme, []byte("`"+name+"`")) {
				t.Errorf("README.md does not describe %s", name)
			}
		}
	}
}

var tableRE = regexp.MustCompile(`(?s)<!-- body:([A-Z_]+) -->\n.*?<!-- /body -->`)

// TestProtocolTables checks the body tables of PROTOCOL.md against the
// schema (and rewrites them with -update).
func TestProtocolTables(t *testing.T) {
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var bad []string
	out := tableRE.ReplaceAllFunc(doc, func(m []byte) []byte {
		name := string(tableRE.FindSubmatch(m)[1])
		seen[name] = true
		var ty Type
		for _, x := range Types() {
			if x.String() == name {
				ty = x
			}
		}
		if ty == 0 {
			bad = append(bad, "unknown type "+name)
			return m
		}
		return []byte("<!-- body:" + name + " -->\n" + BodyTable(ty) + "<!-- /body -->")
	})
	for _, ty := range Types() {
		if !seen[ty.String()] {
			bad = append(bad, "no body table for "+ty.String())
		}
	}
	if len(bad) > 0 {
		t.Fatal(strings.Join(bad, "; "))
	}
	if *update {
		if err := os.WriteFile(protocolDoc, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(out, doc) {
		t.Fatal("PROTOCOL.md's body tables differ from the schema; run go test ./netsvc/... -update")
	}
}

// TestSchemaMatchesEncoders checks that every golden body has exactly the
// size the schema gives it, so the tables describe what the code writes.
func TestSchemaMatchesEncoders(t *testing.T) {
	for _, v := range goldenVectors() {
		fs := schemas[v.msg.Type()]
		body := v.msg.AppendBody(nil)
		fixed, syms := layoutOf(fs)
		want := fixed
		for _, f := range fs {
			switch f.kind {
			case fStr8, fStr16:
				// The length prefix is in fixed; add the bytes.
				want += schemaVarLen(v.msg, f.sym)
			case fCredit:
				want += 8 * len(v.msg.(*CreditBatch).Entries)
			case fStored:
				want += len(body) - fixed
			}
		}
		if want != len(body) {
			t.Errorf("%s: body of %d bytes, the schema (%d fixed, %v) gives %d", v.name, len(body), fixed, syms, want)
		}
		if info := typeInfos[v.msg.Type()]; info.Data && info.Fields != fixed {
			t.Errorf("%v: %d fixed fields in the schema, %d in the type table", v.msg.Type(), fixed, info.Fields)
		}
	}
	// Every type has a schema and a body table.
	for _, ty := range Types() {
		if _, ok := schemas[ty]; !ok {
			t.Errorf("%v has no schema", ty)
		}
	}
	if !slices.Equal(slices.Sorted(mapsKeys(schemas)), Types()) {
		t.Error("schemas for unknown types")
	}
}

func mapsKeys(m map[Type][]field) func(func(Type) bool) {
	return func(yield func(Type) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func schemaVarLen(m Message, sym string) int {
	switch m := m.(type) {
	case *Hello:
		return map[string]int{"C": len(m.ClientID), "T": len(m.AuthToken)}[sym]
	case *HelloAck:
		return len(m.ServerName)
	case *ErrorMsg:
		return len(m.Message)
	case *CloseChannel:
		return len(m.Message)
	case *WriteOpen:
		return map[string]int{"J": len(m.Job), "D": len(m.Dataset)}[sym]
	case *PushOpen:
		return map[string]int{"J": len(m.Job), "D": len(m.Dataset)}[sym]
	case *ReadOpen:
		return map[string]int{"J": len(m.Job), "D": len(m.Dataset)}[sym]
	}
	return 0
}
