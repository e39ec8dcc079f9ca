package client

import (
	"fmt"

	"github.com/pierrec/lz4/v4"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// Encoder turns uncompressed payloads (records in the framing of
// PROTOCOL.md) into stored buffers and segments: LZ4-compressed when that
// shrinks them, raw with the raw-fallback flag when it does not, the
// payload and header CRC32Cs computed. It appends to caller buffers and
// allocates nothing once they have room. An Encoder is not safe for
// concurrent use.
//
// Incompressible data is cheap: the LZ4 compressor gives up early on data
// without matches, and after a few buffers in a row that did not shrink the
// Encoder stores the next ones raw without trying (1, 2, 4, … up to
// rawSkipMax buffers), then tries again.
type Encoder struct {
	lz4    bool
	c      lz4.Compressor
	misses int // buffers in a row that did not shrink
	skip   int // buffers still to store raw without trying

	Stats EncoderStats
}

// EncoderStats count what an Encoder did.
type EncoderStats struct {
	Items             uint64 // buffers and segments encoded
	UncompressedBytes uint64
	PayloadBytes      uint64 // stored payload bytes
	Raw               uint64 // items stored raw although the codec compresses
	Skipped           uint64 // of those, items not even tried
}

const (
	// minCompressBytes: shorter payloads are stored raw (an LZ4 block has
	// a few bytes of overhead and needs a match to gain anything).
	minCompressBytes    = 32
	rawMissesBeforeSkip = 2
	rawSkipMax          = 64
)

// NewEncoder returns an encoder for a partition of the given codec.
func NewEncoder(codec wire.Codec) (*Encoder, error) {
	switch codec {
	case wire.CodecNone:
		return &Encoder{}, nil
	case wire.CodecLZ4:
		return &Encoder{lz4: true}, nil
	}
	return nil, fmt.Errorf("client: unknown codec %v", codec)
}

// Codec is the partition codec the encoder was made for.
func (e *Encoder) Codec() wire.Codec {
	if e.lz4 {
		return wire.CodecLZ4
	}
	return wire.CodecNone
}

// AppendBuffer appends one stored MapPartition buffer of subpartition sub
// (wire.AllSubpartitions in a broadcast region) whose uncompressed payload
// is raw: its 24-byte header and payload.
func (e *Encoder) AppendBuffer(dst []byte, sub uint32, raw []byte) ([]byte, error) {
	start := len(dst)
	dst, codec, flags, n := e.appendPayload(dst, wire.BufferHeaderSize, raw)
	h := wire.BufferHeader{Subpartition: sub, Codec: codec, Flags: flags, PayloadLength: uint32(n),
		UncompressedLength: uint32(len(raw)), PayloadCRC: wire.Checksum(dst[start+wire.BufferHeaderSize:])}
	if err := wire.PutBufferHeader(dst[start:], &h); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// AppendSegment appends one stored ReducePartition segment of the given
// producer attempt and seq.
func (e *Encoder) AppendSegment(dst []byte, mapIndex, attempt, seq uint32, raw []byte) ([]byte, error) {
	start := len(dst)
	dst, codec, flags, n := e.appendPayload(dst, wire.SegmentHeaderSize, raw)
	h := wire.SegmentHeader{Map: mapIndex, Attempt: attempt, Seq: seq, Codec: codec, Flags: flags,
		PayloadLength: uint32(n), UncompressedLength: uint32(len(raw)), PayloadCRC: wire.Checksum(dst[start+wire.SegmentHeaderSize:])}
	if err := wire.PutSegmentHeader(dst[start:], &h); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// appendPayload appends room for a header of hs bytes and the stored
// payload of raw; it returns the codec, flags and payload length.
func (e *Encoder) appendPayload(dst []byte, hs int, raw []byte) ([]byte, wire.Codec, wire.BufferFlags, int) {
	start := len(dst)
	need := start + hs + len(raw)
	if cap(dst) < need {
		grown := make([]byte, start, need+need/4)
		copy(grown, dst)
		dst = grown
	}
	dst = dst[:need]
	p := dst[start+hs:]
	e.Stats.Items++
	e.Stats.UncompressedBytes += uint64(len(raw))
	if !e.lz4 {
		copy(p, raw)
		e.Stats.PayloadBytes += uint64(len(raw))
		return dst, wire.CodecNone, 0, len(raw)
	}
	if e.skip > 0 || len(raw) < minCompressBytes {
		if e.skip > 0 {
			e.skip--
			e.Stats.Skipped++
		}
		return e.raw(dst, p, raw)
	}
	// The compressed block must be shorter than raw to be worth it: give
	// the compressor one byte less than raw, so that it stops as soon as
	// it cannot win.
	n, err := e.c.CompressBlock(raw, p[:len(raw)-1])
	if err != nil || n == 0 {
		if e.misses++; e.misses >= rawMissesBeforeSkip {
			e.skip = min(1<<(e.misses-rawMissesBeforeSkip), rawSkipMax)
		}
		return e.raw(dst, p, raw)
	}
	e.misses = 0
	e.Stats.PayloadBytes += uint64(n)
	return dst[:start+hs+n], wire.CodecLZ4, 0, n
}

func (e *Encoder) raw(dst, p, raw []byte) ([]byte, wire.Codec, wire.BufferFlags, int) {
	copy(p, raw)
	e.Stats.Raw++
	e.Stats.PayloadBytes += uint64(len(raw))
	return dst, wire.CodecNone, wire.FlagRawFallback, len(raw)
}
