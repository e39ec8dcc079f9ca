package client

import (
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// FuzzDecoder feeds arbitrary stored bytes to a Decoder (as buffers, or as
// segments): no input panics, and every failure is a typed error.
//
//	go test ./client -run '^$' -fuzz FuzzDecoder -fuzztime 60s
func FuzzDecoder(f *testing.F) {
	enc, _ := NewEncoder(wire.CodecLZ4)
	g := newTextGen(61)
	var raw []byte
	for range 20 {
		raw = wire.AppendRecord(raw, g.record(nil, 40))
	}
	buf, _ := enc.AppendBuffer(nil, 2, raw)
	frag, _ := enc.AppendBuffer(nil, 2, wire.AppendFragment(nil, []byte("half a record"), true))
	seg, _ := enc.AppendSegment(nil, 1, 0, 0, raw)
	f.Add(buf, false)
	f.Add(append(frag, buf...), false)
	f.Add(seg, true)
	f.Fuzz(func(t *testing.T, b []byte, segment bool) {
		ref := mapRef
		if segment {
			ref = PartitionRef{Job: "j", Dataset: "d", Kind: wire.PartitionReduce, Index: 1}
		}
		d, _ := NewDecoder(DecoderConfig{Partition: ref, MaxRecordBytes: 1 << 20})
		for len(b) > 0 {
			n, err := d.Decode(b)
			if err != nil {
				if _, ok := err.(*CorruptDataError); !ok {
					t.Fatalf("untyped error %v", err)
				}
				return
			}
			for d.Next() {
				_ = d.Record()
			}
			if d.Err() != nil {
				return
			}
			b = b[n:]
		}
		_ = d.Finish(nil)
	})
}
