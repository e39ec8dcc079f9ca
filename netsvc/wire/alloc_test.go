package wire

import (
	"testing"
)

// The hot paths allocate nothing: header encode and decode, every body
// decoder on a valid body, a data frame's header, READ_DATA's fields, the
// stored checks, and control frames appended into a buffer with room.
func TestZeroAllocs(t *testing.T) {
	buf := make([]byte, 0, 1<<16)
	h := Header{Version: 1, Type: TypeWriteData, Channel: 7, Length: 1000}
	hb := AppendHeader(nil, h)
	rd := (&ReadData{ReadDataFields{Backlog: 1 << 20, Next: 100}, goldenBuffer(1, recs(words), true)}).AppendFrame(nil, 1, 7)
	rh, _ := DecodeHeader(rd, HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit})
	stored := goldenBuffer(1, recs(words, words), true)
	rawPayload := payloadOf(recs(words, "x"))
	checks := map[string]func(){
		"PutHeader":            func() { PutHeader(hb, h) },
		"DecodeHeader":         func() { _, _ = DecodeHeader(hb, serverRules) },
		"PutDataHeader":        func() { PutDataHeader(hb, 1, TypeWriteData, 7, 1000) },
		"AppendReadDataHeader": func() { _ = AppendReadDataHeader(buf[:0], 1, 7, 100, 10, 4096) },
		"DecodeReadDataFields": func() { _, _ = DecodeReadDataFields(&rh, rd[HeaderSize:]) },
		"NextStored":           func() { _, _ = NextStored(stored, false) },
		"Credit.AppendFrame":   func() { _ = (&Credit{Bytes: 5}).AppendFrame(buf[:0], 1, 9) },
		"CreditBatch.AppendFrame": func() {
			m := CreditBatch{Entries: []CreditEntry{{1, 2}, {3, 4}}}
			_ = m.AppendFrame(buf[:0], 1)
		},
		"ParseFragment": func() { _, _, _, _ = ParseFragment(rawPayload) },
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs", name, n)
		}
	}
	for _, v := range goldenVectors() {
		body := v.msg.AppendBody(nil)
		m := NewMessage(v.msg.Type())
		if cb, ok := m.(*CreditBatch); ok {
			cb.Entries = make([]CreditEntry, 0, 16)
		}
		if n := testing.AllocsPerRun(100, func() {
			if err := m.DecodeBody(body); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%v.DecodeBody: %v allocs", v.msg.Type(), n)
		}
		own := func() { _ = appendOwnInto(m, buf[:0], v.version, v.channel) }
		if n := testing.AllocsPerRun(100, own); n != 0 {
			t.Errorf("%v.AppendFrame: %v allocs", v.msg.Type(), n)
		}
	}
}

func appendOwnInto(m Message, dst []byte, version uint8, channel uint32) []byte {
	switch m := m.(type) {
	case *Hello:
		return m.AppendFrame(dst)
	case *HelloAck:
		return m.AppendFrame(dst)
	case *Heartbeat:
		return m.AppendFrame(dst, version)
	case *CloseConnection:
		return m.AppendFrame(dst, version)
	case *CreditBatch:
		return m.AppendFrame(dst, version)
	case interface {
		AppendFrame([]byte, uint8, uint32) []byte
	}:
		return m.AppendFrame(dst, version, channel)
	}
	panic("no AppendFrame")
}
