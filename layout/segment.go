package layout

import "encoding/binary"

// SegmentHeader is the fixed-size header of every segment in a
// ReducePartition file: one push of one producer attempt for this
// subpartition. Like a buffer header it travels on the wire unchanged, so a
// consumer checks both CRCs end to end.
//
//	+------+-------+-------+--------+---------+--------+----------+--------------+---------+---------+
//	| kind | codec | flags | map    | attempt | seq    | payload  | uncompressed | payload | header  |
//	| 'S'  | uint8 | u16   | uint32 | uint32  | uint32 | length   | length       | CRC32C  | CRC32C  |
//	+------+-------+-------+--------+---------+--------+----------+--------------+---------+---------+
//	0      1       2       4        8         12       16         20             24        28        32
type SegmentHeader struct {
	// Map is the producer's map index, Attempt its attempt number.
	Map     uint32
	Attempt uint32
	// Seq numbers the segments of one (map, attempt) in this subpartition:
	// 0, 1, 2, … without gaps. A retried push repeats a seq with the same
	// bytes; readers serve each seq once.
	Seq uint32
	// Codec, Flags, PayloadLength, UncompressedLength and PayloadCRC mean
	// what they mean in a BufferHeader.
	Codec              Codec
	Flags              BufferFlags
	PayloadLength      uint32
	UncompressedLength uint32
	PayloadCRC         uint32
}

const (
	segKindOff       = 0
	segCodecOff      = segKindOff + 1
	segFlagsOff      = segCodecOff + 1
	segMapOff        = segFlagsOff + 2
	segAttemptOff    = segMapOff + 4
	segSeqOff        = segAttemptOff + 4
	segPayloadLenOff = segSeqOff + 4
	segUncompLenOff  = segPayloadLenOff + 4
	segPayloadCRCOff = segUncompLenOff + 4
	segHeaderCRCOff  = segPayloadCRCOff + 4
	// SegmentHeaderSize is the size of a segment header.
	SegmentHeaderSize = segHeaderCRCOff + crcSize
)

const (
	_ uint = SegmentHeaderSize - 32
	_ uint = 32 - SegmentHeaderSize
)

// Validate reports whether the format can hold h.
func (h *SegmentHeader) Validate() error {
	if msg := checkPayloadFields(h.Codec, h.Flags, h.PayloadLength, h.UncompressedLength); msg != "" {
		return invalidf("segment header: %s", msg)
	}
	return nil
}

// PutSegmentHeader encodes h into b[:SegmentHeaderSize], header CRC included.
func PutSegmentHeader(b []byte, h *SegmentHeader) error {
	if err := h.Validate(); err != nil {
		return err
	}
	if len(b) < SegmentHeaderSize {
		return invalidf("segment header needs %d bytes, have %d", SegmentHeaderSize, len(b))
	}
	b = b[:SegmentHeaderSize]
	b[segKindOff] = itemSegment
	b[segCodecOff] = byte(h.Codec)
	binary.LittleEndian.PutUint16(b[segFlagsOff:], uint16(h.Flags))
	binary.LittleEndian.PutUint32(b[segMapOff:], h.Map)
	binary.LittleEndian.PutUint32(b[segAttemptOff:], h.Attempt)
	binary.LittleEndian.PutUint32(b[segSeqOff:], h.Seq)
	binary.LittleEndian.PutUint32(b[segPayloadLenOff:], h.PayloadLength)
	binary.LittleEndian.PutUint32(b[segUncompLenOff:], h.UncompressedLength)
	binary.LittleEndian.PutUint32(b[segPayloadCRCOff:], h.PayloadCRC)
	binary.LittleEndian.PutUint32(b[segHeaderCRCOff:], Checksum(b[:segHeaderCRCOff]))
	return nil
}

// DecodeSegmentHeader decodes and checks the segment header at the start of
// b; error offsets are relative to b. It allocates nothing unless it fails.
func DecodeSegmentHeader(b []byte) (SegmentHeader, error) {
	return decodeSegmentHeader(b, KindReducePartition, 0)
}

func decodeSegmentHeader(b []byte, kind FileKind, off int64) (SegmentHeader, error) {
	if len(b) < SegmentHeaderSize {
		return SegmentHeader{}, truncatedAt(kind, off, int64(len(b)), SegmentHeaderSize, "segment header")
	}
	b = b[:SegmentHeaderSize]
	if b[segKindOff] != itemSegment {
		return SegmentHeader{}, corruptf(kind, off, 1, "item kind %#02x where a segment header ('S') belongs", b[segKindOff])
	}
	if err := checkCRC(kind, off, b[:segHeaderCRCOff], b[segHeaderCRCOff:], "segment header CRC"); err != nil {
		return SegmentHeader{}, err
	}
	h := SegmentHeader{
		Codec:              Codec(b[segCodecOff]),
		Flags:              BufferFlags(binary.LittleEndian.Uint16(b[segFlagsOff:])),
		Map:                binary.LittleEndian.Uint32(b[segMapOff:]),
		Attempt:            binary.LittleEndian.Uint32(b[segAttemptOff:]),
		Seq:                binary.LittleEndian.Uint32(b[segSeqOff:]),
		PayloadLength:      binary.LittleEndian.Uint32(b[segPayloadLenOff:]),
		UncompressedLength: binary.LittleEndian.Uint32(b[segUncompLenOff:]),
		PayloadCRC:         binary.LittleEndian.Uint32(b[segPayloadCRCOff:]),
	}
	if msg := checkPayloadFields(h.Codec, h.Flags, h.PayloadLength, h.UncompressedLength); msg != "" {
		return SegmentHeader{}, corruptf(kind, off, SegmentHeaderSize, "segment header: %s", msg)
	}
	return h, nil
}

// FrameSize returns the size of the segment: header and payload.
func (h *SegmentHeader) FrameSize() int64 { return SegmentHeaderSize + int64(h.PayloadLength) }

// CheckPayload checks that p is the payload h describes: its length and the
// producer's CRC32C. Error offsets are relative to the header's start.
func (h *SegmentHeader) CheckPayload(p []byte) error {
	return checkPayload(KindReducePartition, SegmentHeaderSize, p, h.PayloadLength, h.PayloadCRC, segPayloadCRCOff, "segment payload CRC")
}
