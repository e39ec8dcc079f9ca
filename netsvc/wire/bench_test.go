package wire

import (
	"bytes"
	"testing"
)

// go test ./netsvc/wire -run '^$' -bench . -benchmem

func BenchmarkHeaderEncode(b *testing.B) {
	var buf [HeaderSize]byte
	h := Header{Version: 1, Type: TypeWriteData, Channel: 7, Length: 32 << 10}
	b.ReportAllocs()
	for b.Loop() {
		PutHeader(buf[:], h)
	}
}

func BenchmarkHeaderDecode(b *testing.B) {
	buf := AppendHeader(nil, Header{Version: 1, Type: TypeWriteData, Channel: 7, Length: 32 << 10})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeHeader(buf, serverRules); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDataFrameHeaderDecode decodes what a worker reads before it
// knows where a WRITE_DATA payload goes: the frame header and the stored
// buffer header.
func BenchmarkDataFrameHeaderDecode(b *testing.B) {
	stored := goldenBuffer(3, recs(words), true)
	frame := (&WriteData{Stored: stored}).AppendFrame(nil, 1, 7)
	b.ReportAllocs()
	for b.Loop() {
		h, err := DecodeHeader(frame, serverRules)
		if err != nil {
			b.Fatal(err)
		}
		bh, err := DecodeBufferHeader(frame[HeaderSize:])
		if err != nil || int(h.Length) != BufferHeaderSize+int(bh.PayloadLength) {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadDataHeaderDecode decodes what a client reads before it
// knows where a READ_DATA body goes.
func BenchmarkReadDataHeaderDecode(b *testing.B) {
	frame := AppendReadDataHeader(nil, 1, 13, 1<<20, 32<<10, 64<<10)
	rules := HeaderRules{Version: 1, MaxFrameBytes: DefaultFrameLimit, Receiver: SideClient}
	b.ReportAllocs()
	for b.Loop() {
		h, err := DecodeHeader(frame, rules)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeReadDataFields(&h, frame[HeaderSize:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreditBatchDecode(b *testing.B) {
	var m CreditBatch
	for i := range 64 {
		m.Entries = append(m.Entries, CreditEntry{Channel: uint32(i + 1), Bytes: 1 << 20})
	}
	body := m.AppendBody(nil)
	b.ReportAllocs()
	for b.Loop() {
		if err := m.DecodeBody(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFrameReaderWriteData receives 32 KiB WRITE_DATA frames through
// a FrameReader the way a worker does: header, buffer header, payload into
// a "write buffer", both CRCs checked.
func BenchmarkFrameReaderWriteData(b *testing.B) {
	payload := bytes.Repeat([]byte(noise(4096, 7)), 8)
	h := BufferHeader{Subpartition: 1, PayloadLength: uint32(len(payload)), UncompressedLength: uint32(len(payload)), PayloadCRC: Checksum(payload)}
	stored := make([]byte, BufferHeaderSize, BufferHeaderSize+len(payload))
	if err := PutBufferHeader(stored, &h); err != nil {
		b.Fatal(err)
	}
	stored = append(stored, payload...)
	var stream []byte
	for range 64 {
		stream = (&WriteData{Stored: stored}).AppendFrame(stream, 1, 7)
	}
	r := bytes.NewReader(stream)
	fr := NewFrameReader(r, serverRules)
	wb := make([]byte, 1<<20)
	b.SetBytes(int64(len(stored)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%64 == 0 {
			r.Reset(stream)
		}
		i++
		if _, err := fr.Next(); err != nil {
			b.Fatal(err)
		}
		if err := fr.ReadFull(wb[:BufferHeaderSize]); err != nil {
			b.Fatal(err)
		}
		bh, err := DecodeBufferHeader(wb)
		if err != nil {
			b.Fatal(err)
		}
		p := wb[BufferHeaderSize : BufferHeaderSize+bh.PayloadLength]
		if err := fr.ReadFull(p); err != nil {
			b.Fatal(err)
		}
		if err := bh.CheckPayload(p); err != nil {
			b.Fatal(err)
		}
	}
}
