package wire

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The fuzz targets are seeded from the golden vectors (valid and invalid)
// and check that no input panics, that whatever decodes re-encodes to the
// same bytes, and (by construction: decoders alias their input, FrameReader
// reads into memory it owns) that nothing is allocated for a length read
// from the input.
//
//	go test ./netsvc/wire -run '^$' -fuzz FuzzFrame -fuzztime 60s

func seedFrames(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, v := range goldenVectors() {
		seeds = append(seeds, AppendFrame(nil, v.version, v.channel, v.msg))
	}
	for _, v := range invalidVectors() {
		if len(v.frame) <= 1<<16 {
			seeds = append(seeds, v.frame)
		}
	}
	// And the files on disk, in case they were made by another generator.
	for _, dir := range []string{goldenDir, filepath.Join(goldenDir, "invalid")} {
		ms, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
		for _, m := range ms {
			if b, err := os.ReadFile(m); err == nil && len(b) <= 1<<16 {
				seeds = append(seeds, b)
			}
		}
	}
	return seeds
}

func rulesFrom(version, receiver uint8, limit uint32) HeaderRules {
	return HeaderRules{Version: version % 3, MaxFrameBytes: MinFrameLimit + limit%(DefaultFrameLimit-MinFrameLimit+1), Receiver: Side(receiver % 4)}
}

func FuzzHeader(f *testing.F) {
	for _, s := range seedFrames(f) {
		f.Add(s[:min(len(s), HeaderSize)], uint8(1), uint8(0), uint32(0))
		f.Add(s[:min(len(s), HeaderSize)], uint8(0), uint8(1), uint32(1<<30))
	}
	f.Fuzz(func(t *testing.T, b []byte, version, receiver uint8, limit uint32) {
		rules := rulesFrom(version, receiver, limit)
		h, err := DecodeHeader(b, rules)
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
		if err == nil || !e.Fatal && e.Code != CodeMalformed {
			// A sound header re-encodes to the same 20 bytes.
			if again := AppendHeader(nil, h); !bytes.Equal(again, b[:HeaderSize]) {
				t.Fatalf("re-encoding %x gives %x (err %v)", b[:HeaderSize], again, err)
			}
		}
		if err == nil && h.Type.Known() && !h.Type.IsData() && h.Length > MaxControlBody {
			t.Fatal("a control body above the limit passed")
		}
		if err == nil && h.Length > rules.MaxFrameBytes {
			t.Fatal("a body above the frame limit passed")
		}
	})
}

func FuzzFrame(f *testing.F) {
	for _, s := range seedFrames(f) {
		f.Add(s, uint8(1), uint8(1))
		f.Add(s, uint8(0), uint8(2))
	}
	f.Fuzz(func(t *testing.T, b []byte, version, receiver uint8) {
		rules := rulesFrom(version, receiver, 0)
		h, m, n, err := DecodeFrame(b, rules)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not an *Error: %v", err)
			}
			if !e.Code.Known() {
				t.Fatalf("unknown code %d", e.Code)
			}
		} else {
			if n != HeaderSize+int(h.Length) || n > len(b) {
				t.Fatalf("frame size %d of %d bytes", n, len(b))
			}
			again := AppendFrame(nil, h.Version, h.Channel, m)
			if info := typeInfos[h.Type]; !info.Extensible && !bytes.Equal(again, b[:n]) {
				t.Fatalf("%v re-encodes differently", h.Type)
			}
		}
		if len(b) <= 1<<12 {
			_ = Describe(b)
		}
	})
}

func FuzzBody(f *testing.F) {
	for _, v := range goldenVectors() {
		f.Add(uint8(v.msg.Type()), v.msg.AppendBody(nil))
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m := NewMessage(Type(typ))
		if m == nil {
			return
		}
		if err := m.DecodeBody(body); err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Code != CodeMalformed && e.Code != CodeBadMagic) {
				t.Fatalf("%v: %v", Type(typ), err)
			}
			return
		}
		again := m.AppendBody(nil)
		if typeInfos[typ].Extensible {
			// Ignored reserved bits and trailing bytes are dropped; what
			// was decoded survives.
			m2 := NewMessage(Type(typ))
			if err := m2.DecodeBody(again); err != nil || !reflect.DeepEqual(normalize(m), normalize(m2)) {
				t.Fatalf("%v: %+v re-decodes as %+v (%v)", Type(typ), m, m2, err)
			}
			return
		}
		if !bytes.Equal(again, body) {
			t.Fatalf("%v: %x re-encodes as %x", Type(typ), body, again)
		}
	})
}

// normalize makes empty and nil byte fields equal for comparison.
func normalize(m Message) Message {
	switch m := m.(type) {
	case *Hello:
		c := *m
		c.ClientID, c.AuthToken = append([]byte{}, c.ClientID...), append([]byte{}, c.AuthToken...)
		return &c
	case *HelloAck:
		c := *m
		c.ServerName = append([]byte{}, c.ServerName...)
		return &c
	case *ErrorMsg:
		c := *m
		c.Message = append([]byte{}, c.Message...)
		return &c
	}
	return m
}

// FuzzHandshake runs a server's side of the handshake on arbitrary bytes:
// read one frame with the handshake's rules, take it as HELLO, negotiate,
// and answer; the answer must be a frame a client accepts.
func FuzzHandshake(f *testing.F) {
	for _, v := range goldenVectors() {
		if v.version == 0 {
			f.Add(AppendFrame(nil, 0, 0, v.msg), true)
		}
	}
	for _, v := range invalidVectors() {
		if v.version == 0 {
			f.Add(v.frame, false)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, requireToken bool) {
		answer := serverHandshake(b, requireToken)
		h, m, n, err := DecodeFrame(answer, HeaderRules{Receiver: SideClient})
		if err != nil || n != len(answer) {
			t.Fatalf("the server's answer %x does not decode: %v", answer, err)
		}
		switch m := m.(type) {
		case *HelloAck:
			if m.Version != V1_0 {
				t.Fatalf("negotiated %v", m.Version)
			}
		case *ErrorMsg:
			if !m.Fatal || h.Version != 0 {
				t.Fatalf("a handshake error must be fatal with version byte 0: %+v", m)
			}
		default:
			t.Fatalf("answer %v", h.Type)
		}
	})
}

// serverHandshake is the reference server handshake: what the worker
// answers to the first bytes of a connection.
func serverHandshake(b []byte, requireToken bool) []byte {
	fail := func(e *Error) []byte {
		m := NewErrorMsg(e, MinSupported, Current)
		m.Fatal = true
		return m.AppendFrame(nil, 0, 0)
	}
	fr := NewFrameReader(bytes.NewReader(b), HeaderRules{MaxFrameBytes: DefaultFrameLimit, Receiver: SideServer})
	h, err := fr.Next()
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Fatal = true
			return fail(e)
		}
		return fail(&Error{Code: CodeProtocol, Msg: "the connection ended inside the handshake"})
	}
	if h.Type != TypeHello {
		return fail(&Error{Code: CodeProtocol, Msg: "the first frame is " + h.Type.String()})
	}
	var ctl [MaxControlBody]byte
	body, err := fr.ReadBody(ctl[:])
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeProtocol, Msg: err.Error()}
		}
		return fail(e)
	}
	var hello Hello
	if err := hello.DecodeBody(body); err != nil {
		return fail(err.(*Error))
	}
	v, ok := Negotiate(hello.VersionMin, hello.VersionMax, MinSupported, Current)
	if !ok {
		return fail(&Error{Code: CodeVersion, Msg: VersionMismatchMessage(hello.VersionMin, hello.VersionMax, MinSupported, Current)})
	}
	if requireToken && string(hello.AuthToken) != "s3cr3t-token" {
		return fail(&Error{Code: CodeAuthFailed, Msg: "bad token"})
	}
	ack := HelloAck{Version: v, WorkerID: goldenWorker, MaxFrameBytes: DefaultFrameLimit, MaxChannels: DefaultMaxChannels,
		MemoryBytes: DefaultConnectionMemory, HeartbeatMillis: 5000, IdleTimeoutMillis: 30000}
	return ack.AppendFrame(nil)
}

// FuzzFrameReader reads a stream of frames the way a connection does.
func FuzzFrameReader(f *testing.F) {
	var stream []byte
	for _, s := range seedFrames(f) {
		if len(s) >= HeaderSize && s[0] == 1 {
			stream = append(stream, s...)
		}
	}
	f.Add(stream, uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, receiver uint8) {
		fr := NewFrameReader(bytes.NewReader(b), rulesFrom(1, receiver, 0))
		ctl := make([]byte, MaxControlBody)
		for i := 0; ; i++ {
			if i > len(b)/HeaderSize {
				t.Fatal("more frames than the stream can hold")
			}
			h, err := fr.Next()
			if err != nil {
				var e *Error
				if errors.As(err, &e) && !e.Fatal {
					continue
				}
				return
			}
			if h.Type.IsData() {
				if fr.Discard() != nil {
					return
				}
				continue
			}
			body, err := fr.ReadBody(ctl)
			if err != nil {
				var e *Error
				if errors.As(err, &e) {
					continue
				}
				return
			}
			if m := NewMessage(h.Type); m != nil {
				_ = m.DecodeBody(body)
			}
		}
	})
}

func FuzzRecords(f *testing.F) {
	f.Add(payloadOf(recs(words, "", "fox")))
	f.Add(payloadOf([]entry{{data: "abc", more: true}}))
	f.Fuzz(func(t *testing.T, p []byte) {
		total := 0
		for len(p) > 0 {
			frag, _, n, err := ParseFragment(p)
			if err != nil {
				return
			}
			if n <= len(frag) || n > len(p) {
				t.Fatalf("entry of %d bytes with %d data bytes", n, len(frag))
			}
			total += n
			p = p[n:]
		}
	})
}
