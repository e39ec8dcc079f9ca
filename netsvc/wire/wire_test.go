package wire

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

var serverRules = HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit, Receiver: SideServer}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Version: 1, Type: TypeCredit, Channel: 0xdeadbeef, Length: 4, BodyCRC: 0x01020304}
	b := AppendHeader([]byte("prefix"), h)
	if len(b) != 6+HeaderSize {
		t.Fatalf("header of %d bytes", len(b)-6)
	}
	got, err := DecodeHeader(b[6:], serverRules)
	if err != nil || got != h {
		t.Fatalf("got %+v, %v", got, err)
	}
	// Every single bit flip is caught by the header CRC.
	for i := range HeaderSize * 8 {
		c := bytes.Clone(b[6:])
		c[i/8] ^= 1 << (i % 8)
		if _, err := DecodeHeader(c, serverRules); !errors.Is(err, CodeBadHeaderCRC) || !errors.Is(err, ErrBadCRC) {
			t.Fatalf("bit %d: %v", i, err)
		}
	}
	if _, err := DecodeHeader(b[6:6+HeaderSize-1], serverRules); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short header: %v", err)
	}
}

func TestHeaderRules(t *testing.T) {
	frame := func(h Header) []byte { return AppendHeader(nil, h) }
	cases := []struct {
		name  string
		rules HeaderRules
		h     Header
		code  Code
		fatal bool
	}{
		{"ok", serverRules, Header{Version: 1, Type: TypeWriteData, Channel: 3, Length: 100}, CodeOK, false},
		{"data at the limit", HeaderRules{Version: 1, MaxFrameBytes: MinFrameLimit}, Header{Version: 1, Type: TypeWriteData, Channel: 3, Length: MinFrameLimit}, CodeOK, false},
		{"data above the limit", HeaderRules{Version: 1, MaxFrameBytes: MinFrameLimit}, Header{Version: 1, Type: TypeWriteData, Channel: 3, Length: MinFrameLimit + 1}, CodeFrameTooLarge, true},
		{"unknown type above the limit", HeaderRules{Version: 1, MaxFrameBytes: MinFrameLimit}, Header{Version: 1, Type: 0xee, Channel: 3, Length: MinFrameLimit + 1}, CodeFrameTooLarge, true},
		{"short write data", serverRules, Header{Version: 1, Type: TypeWriteData, Channel: 3, Length: 23}, CodeMalformed, false},
		{"short push data", serverRules, Header{Version: 1, Type: TypePushData, Channel: 3, Length: 31}, CodeMalformed, false},
		{"short read data", HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit}, Header{Version: 1, Type: TypeReadData, Channel: 3, Length: 11}, CodeMalformed, false},
		{"error with version 0 after the handshake", serverRules, Header{Version: 0, Type: TypeError, Channel: 0}, CodeOK, false},
		{"error before the handshake", HeaderRules{}, Header{Version: 0, Type: TypeError, Channel: 0}, CodeOK, false},
		{"hello with version byte 1", HeaderRules{}, Header{Version: 1, Type: TypeHello}, CodeProtocol, true},
		{"unknown type before the handshake", HeaderRules{}, Header{Version: 0, Type: 0x77}, CodeProtocol, true},
		{"read data at a server", serverRules, Header{Version: 1, Type: TypeReadData, Channel: 3, Length: 12}, CodeOutOfOrder, false},
		{"write data at a client", HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit, Receiver: SideClient}, Header{Version: 1, Type: TypeWriteData, Channel: 3, Length: 24}, CodeOutOfOrder, false},
		{"hello ack at a server", HeaderRules{Receiver: SideServer}, Header{Version: 0, Type: TypeHelloAck}, CodeOutOfOrder, true},
		{"credit batch on a channel", serverRules, Header{Version: 1, Type: TypeCreditBatch, Channel: 5}, CodeMalformed, false},
		{"write open on channel 0", serverRules, Header{Version: 1, Type: TypeWriteOpen}, CodeMalformed, true},
	}
	for _, c := range cases {
		h, err := DecodeHeader(frame(c.h), c.rules)
		if c.code == CodeOK {
			if err != nil || h != c.h {
				t.Errorf("%s: %+v, %v", c.name, h, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != c.code || e.Fatal != c.fatal {
			t.Errorf("%s: %v, want %v fatal=%v", c.name, err, c.code, c.fatal)
			continue
		}
		if !e.Fatal && h != c.h {
			t.Errorf("%s: a non-fatal error must return the header, got %+v", c.name, h)
		}
	}
}

func TestNegotiate(t *testing.T) {
	v := func(ma, mi uint16) Version { return MakeVersion(ma, mi) }
	cases := []struct {
		cmin, cmax, smin, smax, want Version
		ok                           bool
	}{
		{V1_0, V1_0, V1_0, V1_0, V1_0, true},
		{v(1, 0), v(1, 3), v(1, 0), v(1, 1), v(1, 1), true},
		{v(1, 0), v(2, 1), v(1, 0), v(1, 4), v(1, 4), true},
		{v(2, 0), v(2, 1), v(1, 0), v(1, 4), 0, false},
		{v(1, 0), v(1, 2), v(2, 0), v(2, 0), 0, false},
		{v(1, 2), v(1, 0), v(1, 0), v(1, 2), 0, false},
		{v(0, 1), v(0, 9), v(0, 0), v(0, 9), 0, false},
		{v(256, 0), v(256, 0), v(256, 0), v(256, 0), 0, false},
	}
	for _, c := range cases {
		got, ok := Negotiate(c.cmin, c.cmax, c.smin, c.smax)
		if got != c.want || ok != c.ok {
			t.Errorf("Negotiate(%v-%v, %v-%v) = %v, %v", c.cmin, c.cmax, c.smin, c.smax, got, ok)
		}
	}
	msg := VersionMismatchMessage(v(2, 0), v(2, 1), V1_0, V1_0)
	for _, want := range []string{"2.0", "2.1", "1.0", "upgrade the Sluice workers"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if msg := VersionMismatchMessage(V1_0, V1_0, v(2, 0), v(2, 0)); !strings.Contains(msg, "upgrade the client") {
		t.Errorf("%q", msg)
	}
}

func TestErrorCodes(t *testing.T) {
	for _, c := range Codes() {
		if c.Name() == "" || strings.HasPrefix(c.Name(), "CODE_") {
			t.Errorf("%d has no name", c)
		}
	}
	if !CodeBadHeaderCRC.ConnectionFatal() || CodeShuttingDown.ConnectionFatal() || CodeMalformed.ConnectionFatal() {
		t.Error("fatality of codes")
	}
	if Code(999).Name() != "CODE_999" || Code(999).Retryable() {
		t.Error("unknown code")
	}
	e := NewErrorMsg(&Error{Code: CodeNoSpace, Msg: strings.Repeat("x", 5000)}, V1_0, V1_0)
	if !e.Retryable || len(e.Message) != MaxMessageSize {
		t.Errorf("%+v", e)
	}
	if err := e.Err(3); !errors.Is(err, CodeNoSpace) || err.Channel != 3 {
		t.Error(err)
	}
}

// Every code and type in PROTOCOL.md's tables matches the code.
func TestProtocolDocNamesEveryCodeAndType(t *testing.T) {
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Codes() {
		row := "| " + itoa(uint32(c)) + " | " + c.Name() + " | "
		if !bytes.Contains(doc, []byte(row)) {
			t.Errorf("PROTOCOL.md has no row %q", row)
		}
	}
	for _, ty := range Types() {
		row := "| 0x" + strings.ToUpper(hex2(uint8(ty))) + " | " + ty.String() + " | "
		if !bytes.Contains(doc, []byte(row)) {
			t.Errorf("PROTOCOL.md has no row %q", row)
		}
	}
}

func hex2(b uint8) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

func TestBodiesRejectEveryTruncation(t *testing.T) {
	for _, v := range goldenVectors() {
		body := v.msg.AppendBody(nil)
		info := typeInfos[v.msg.Type()]
		for n := range len(body) {
			m := NewMessage(v.msg.Type())
			err := m.DecodeBody(body[:n])
			if info.Data {
				continue // the stored bytes' own checks catch truncation (TestStoredChecks)
			}
			if err == nil {
				t.Errorf("%s: a body cut to %d of %d bytes decodes", v.name, n, len(body))
			}
		}
		if !info.Extensible && !info.Data {
			if err := NewMessage(v.msg.Type()).DecodeBody(append(bytes.Clone(body), 0)); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: a trailing byte: %v", v.name, err)
			}
		} else if info.Extensible {
			if err := NewMessage(v.msg.Type()).DecodeBody(append(bytes.Clone(body), 1, 2, 3)); err != nil {
				t.Errorf("%s: trailing bytes of an extensible message: %v", v.name, err)
			}
		}
	}
}

func TestStoredChecks(t *testing.T) {
	buf := goldenBuffer(3, recs(words, "x"), true)
	it, err := NextStored(buf, false)
	if err != nil || it.Size != len(buf) || it.Buffer.Subpartition != 3 || it.Codec() != CodecLZ4 {
		t.Fatalf("%+v, %v", it, err)
	}
	for n := range len(buf) {
		if _, err := NextStored(buf[:n], false); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d: %v", n, err)
		}
	}
	for i := range len(buf) * 8 {
		c := bytes.Clone(buf)
		c[i/8] ^= 1 << (i % 8)
		if _, err := NextStored(c, false); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit %d: %v", i, err)
		}
	}
	if _, err := NextStored(buf, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a buffer read as a segment: %v", err)
	}
	seg := goldenSegment(1, 2, 3, recs("a", "b"))
	it, err = NextStored(seg, true)
	if err != nil || it.Segment.Seq != 3 || !it.IsSegment {
		t.Fatalf("%+v, %v", it, err)
	}
}

func TestRecordFraming(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var p []byte
	var want [][]byte
	var mores []bool
	for i := range 2000 {
		n := rng.IntN(300)
		if i%100 == 0 {
			n = rng.IntN(70000)
		}
		r := make([]byte, n)
		for j := range r {
			r[j] = byte(rng.Uint32())
		}
		more := rng.IntN(10) == 0
		p = AppendFragment(p, r, more)
		want, mores = append(want, r), append(mores, more)
	}
	for i := 0; len(p) > 0; i++ {
		f, more, size, err := ParseFragment(p)
		if err != nil || !bytes.Equal(f, want[i]) || more != mores[i] || size != FragmentHeaderLen(len(f))+len(f) {
			t.Fatalf("entry %d: %d bytes, more %v, size %d, %v", i, len(f), more, size, err)
		}
		p = p[size:]
	}
	for _, n := range []int{0, 63, 64, 8191, 8192, 1<<20 - 1, 1 << 20, 1<<27 - 1, 1 << 27} {
		if got, want := FragmentHeaderLen(n), len(AppendFragment(nil, nil, n&1 == 0)[:0:0])+len(appendUvarintLen(n)); got != want {
			t.Errorf("FragmentHeaderLen(%d) = %d, want %d", n, got, want)
		}
	}
	bad := [][]byte{{}, {0x04, 'a'}, {0x80}, {0xff, 0xff, 0xff, 0xff, 0xff, 0x01}}
	for _, b := range bad {
		if _, _, _, err := ParseFragment(b); !errors.Is(err, ErrRecordFraming) {
			t.Errorf("%x: %v", b, err)
		}
	}
	// The examples of PROTOCOL.md.
	if got := AppendRecord(nil, []byte("fox")); !bytes.Equal(got, []byte{0x06, 'f', 'o', 'x'}) {
		t.Errorf("fox: %x", got)
	}
	if got := AppendRecord(nil, make([]byte, 200))[:2]; !bytes.Equal(got, []byte{0x90, 0x03}) {
		t.Errorf("200: %x", got)
	}
	if got := AppendFragment(nil, make([]byte, 100), true)[:2]; !bytes.Equal(got, []byte{0xc9, 0x01}) {
		t.Errorf("100 more: %x", got)
	}
}

func appendUvarintLen(n int) []byte {
	var b []byte
	v := uint64(n) << 1
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// A stream of frames read through FrameReader, with data bodies read into
// memory of the caller's choice, control bodies through ReadBody, and some
// bodies left for Next to skip; through a reader that returns one byte at
// a time.
func TestFrameReader(t *testing.T) {
	var stream []byte
	var want []Message
	for _, v := range goldenVectors() {
		if v.version == 0 {
			continue
		}
		stream = AppendFrame(stream, v.version, v.channel, v.msg)
		want = append(want, v.msg)
	}
	for _, r := range []io.Reader{bytes.NewReader(stream), iotest.OneByteReader(bytes.NewReader(stream))} {
		fr := NewFrameReader(r, HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit})
		ctl := make([]byte, MaxControlBody)
		for i, w := range want {
			h, err := fr.Next()
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if h.Type != w.Type() {
				t.Fatalf("frame %d: %v, want %v", i, h.Type, w.Type())
			}
			switch {
			case i%7 == 3:
				// leave the body to Next
			case h.Type == TypeWriteData:
				// A server: the buffer header, then the payload into "its write buffer".
				wb := make([]byte, 1<<16)
				if err := fr.ReadFull(wb[:BufferHeaderSize]); err != nil {
					t.Fatal(err)
				}
				bh, err := DecodeBufferHeader(wb)
				if err != nil {
					t.Fatal(err)
				}
				p := wb[BufferHeaderSize : BufferHeaderSize+bh.PayloadLength]
				if err := fr.ReadFull(p); err != nil {
					t.Fatal(err)
				}
				if err := bh.CheckPayload(p); err != nil || fr.Remaining() != 0 {
					t.Fatal(err, fr.Remaining())
				}
			case h.Type == TypeReadData:
				var f [ReadDataFieldsSize]byte
				if err := fr.ReadFull(f[:]); err != nil {
					t.Fatal(err)
				}
				fields, err := DecodeReadDataFields(&h, f[:])
				if err != nil || fields != w.(*ReadData).ReadDataFields {
					t.Fatal(fields, err)
				}
				rest, err := io.ReadAll(fr)
				if err != nil || !bytes.Equal(rest, w.(*ReadData).Stored) {
					t.Fatal(err)
				}
			default:
				body, err := fr.ReadBody(ctl)
				if err != nil {
					t.Fatal(err)
				}
				m := NewMessage(h.Type)
				if err := m.DecodeBody(body); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := fr.Next(); err != io.EOF {
			t.Fatalf("after the last frame: %v", err)
		}
	}
	// A stream cut inside a header or a body.
	for _, cut := range []int{5, HeaderSize + 2} {
		fr := NewFrameReader(bytes.NewReader(stream[:cut]), HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit})
		_, err := fr.Next()
		if err == nil {
			err = fr.Discard()
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v", cut, err)
		}
	}
	// After a fatal error the reader refuses to go on.
	bad := bytes.Clone(stream)
	bad[0] ^= 0x40
	fr := NewFrameReader(bytes.NewReader(bad), HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit})
	if _, err := fr.Next(); !errors.Is(err, CodeBadHeaderCRC) {
		t.Fatal(err)
	}
	if _, err := fr.Next(); !errors.Is(err, ErrFraming) {
		t.Fatal(err)
	}
}

// A non-fatal error leaves the body to skip; the reader carries on.
func TestFrameReaderSkipsAfterFrameError(t *testing.T) {
	var s []byte
	s = AppendHeader(s, Header{Version: 1, Type: 0x7e, Channel: 4, Length: 3})
	s = append(s, 1, 2, 3)
	s = (&Credit{Bytes: 9}).AppendFrame(s, 1, 4)
	fr := NewFrameReader(bytes.NewReader(s), serverRules)
	h, err := fr.Next()
	if !errors.Is(err, ErrUnknownType) || h.Channel != 4 || fr.Remaining() != 3 {
		t.Fatal(h, err)
	}
	if h, err = fr.Next(); err != nil || h.Type != TypeCredit {
		t.Fatal(h, err)
	}
}

// The files in testdata/protocol are what the tests use: decode them all
// from disk once more through the stream reader.
func TestGoldenStream(t *testing.T) {
	var stream []byte
	for _, v := range goldenVectors() {
		if v.version == 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(goldenDir, v.name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, b...)
	}
	for off := 0; off < len(stream); {
		_, _, n, err := DecodeFrame(stream[off:], HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit})
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
}
