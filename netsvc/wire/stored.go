package wire

import (
	"fmt"

	"github.com/sluice-shuffle/sluice/layout"
)

// The stored formats that travel in data frames. A WRITE_DATA body is one
// stored MapPartition buffer, a PUSH_DATA body one stored ReducePartition
// segment, and READ_DATA carries whole buffers or segments as they lie on
// disk: the bytes are layout's, re-exported here so that clients (which
// never import layout) build and check exactly what the worker stores.
// PROTOCOL.md reproduces their tables.

// Stored headers and their fields.
type (
	BufferHeader  = layout.BufferHeader
	SegmentHeader = layout.SegmentHeader
	BufferFlags   = layout.BufferFlags
	Codec         = layout.Codec
	// CorruptError describes stored bytes that fail a check (a CRC, a
	// length, a field); it matches ErrCorrupt.
	CorruptError = layout.CorruptError
)

const (
	BufferHeaderSize  = layout.BufferHeaderSize
	SegmentHeaderSize = layout.SegmentHeaderSize
	// MaxPayloadSize bounds a stored payload, compressed or not.
	MaxPayloadSize = layout.MaxPayloadSize
	// AllSubpartitions is the subpartition of broadcast buffers.
	AllSubpartitions = layout.AllSubpartitions

	CodecNone = layout.CodecNone
	CodecLZ4  = layout.CodecLZ4

	// FlagRawFallback marks a buffer its producer stored raw because
	// compression did not shrink it.
	FlagRawFallback = layout.FlagRawFallback
)

// ErrCorrupt matches every *CorruptError.
var ErrCorrupt = layout.ErrCorrupt

// Checksum is the CRC32C (Castagnoli) every CRC of the protocol and of the
// stored formats uses; UpdateChecksum extends one.
func Checksum(b []byte) uint32                   { return layout.Checksum(b) }
func UpdateChecksum(crc uint32, b []byte) uint32 { return layout.UpdateChecksum(crc, b) }

// PutBufferHeader encodes h into b[:BufferHeaderSize], header CRC
// included; h.PayloadCRC must already be the payload's Checksum.
func PutBufferHeader(b []byte, h *BufferHeader) error { return layout.PutBufferHeader(b, h) }

// DecodeBufferHeader decodes and checks (kind, header CRC, fields) the
// buffer header at the start of b. It allocates nothing unless it fails.
func DecodeBufferHeader(b []byte) (BufferHeader, error) { return layout.DecodeBufferHeader(b) }

// PutSegmentHeader encodes h into b[:SegmentHeaderSize], header CRC included.
func PutSegmentHeader(b []byte, h *SegmentHeader) error { return layout.PutSegmentHeader(b, h) }

// DecodeSegmentHeader decodes and checks the segment header at the start of b.
func DecodeSegmentHeader(b []byte) (SegmentHeader, error) { return layout.DecodeSegmentHeader(b) }

// StoredItem is one stored buffer or segment found in a data frame.
type StoredItem struct {
	// Buffer is set for a MapPartition buffer, Segment for a
	// ReducePartition segment (IsSegment).
	Buffer    BufferHeader
	Segment   SegmentHeader
	IsSegment bool
	// Payload aliases the frame's bytes; its CRC has been checked.
	Payload []byte
	// Size is the item's size, header included.
	Size int
}

// Codec, Flags, UncompressedLength of either kind.
func (it *StoredItem) Codec() Codec {
	if it.IsSegment {
		return it.Segment.Codec
	}
	return it.Buffer.Codec
}

// UncompressedLength is the payload's decoded size.
func (it *StoredItem) UncompressedLength() uint32 {
	if it.IsSegment {
		return it.Segment.UncompressedLength
	}
	return it.Buffer.UncompressedLength
}

// NextStored checks the stored item (a buffer, or a segment when
// segment is set) at the start of b: its header, that b holds its whole
// payload, and the payload CRC. A READ_DATA receiver calls it in a loop
// over the frame's stored bytes; a worker receiving WRITE_DATA or PUSH_DATA
// checks the body with it and that Size is the whole body. It allocates
// nothing unless it fails.
func NextStored(b []byte, segment bool) (StoredItem, error) {
	var it StoredItem
	it.IsSegment = segment
	var hs int
	var n uint32
	if segment {
		h, err := layout.DecodeSegmentHeader(b)
		if err != nil {
			return it, err
		}
		it.Segment, hs, n = h, SegmentHeaderSize, h.PayloadLength
	} else {
		h, err := layout.DecodeBufferHeader(b)
		if err != nil {
			return it, err
		}
		it.Buffer, hs, n = h, BufferHeaderSize, h.PayloadLength
	}
	if len(b)-hs < int(n) {
		return it, &CorruptError{File: kindOf(segment), Offset: int64(hs), Length: int64(n), Truncated: true,
			What: fmt.Sprintf("payload of %d bytes, the frame holds %d", n, len(b)-hs)}
	}
	it.Payload = b[hs : hs+int(n)]
	it.Size = hs + int(n)
	var err error
	if segment {
		err = it.Segment.CheckPayload(it.Payload)
	} else {
		err = it.Buffer.CheckPayload(it.Payload)
	}
	return it, err
}

func kindOf(segment bool) layout.FileKind {
	if segment {
		return layout.KindReducePartition
	}
	return layout.KindMapPartition
}
