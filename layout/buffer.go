package layout

import (
	"encoding/binary"
	"fmt"
)

// Item kinds: the first byte of every structure that follows a file header.
// A sequential reader (the verifier) tells them apart by this byte alone. Any
// two differ in at least two bits, so one flipped bit never turns one valid
// kind into another. The values are part of the durable format.
const (
	itemBuffer    = 'B' // 0x42, MapPartition buffer
	itemIndex     = 'I' // 0x49, MapPartition index block
	itemDirectory = 'D' // 0x44, MapPartition region directory
	itemSegment   = 'S' // 0x53, ReducePartition segment
	itemAttempts  = 'A' // 0x41, ReducePartition attempt table
)

// MaxPayloadSize bounds the payload of a buffer or segment, stored and
// uncompressed. Clients split larger data; the bound lets a reader of the
// wire allocate for a payload only after checking the header that sizes it.
const MaxPayloadSize = 64 << 20

// BufferFlags are the flag bits of a buffer or segment header. Bits without a
// name are zero in format 1.x.
type BufferFlags uint16

const (
	// FlagRawFallback: the producer compressed with the partition's codec,
	// the result did not shrink, and it stored the data raw (CodecNone).
	FlagRawFallback BufferFlags = 1 << 0

	flagsKnown = FlagRawFallback
)

// BufferHeader is the fixed-size header of every buffer in a MapPartition
// file. The same BufferHeaderSize bytes, followed by the payload, travel in
// read-data frames: the worker sends stored bytes as they are, and the
// consumer checks the header CRC and the producer's payload CRC end to end.
//
//	+------+-------+-------+--------------+----------+--------------+------------+-----------+
//	| kind | codec | flags | subpartition | payload  | uncompressed | payload    | header    |
//	| 'B'  | uint8 | u16   | uint32       | length   | length       | CRC32C     | CRC32C    |
//	|      |       |       |              | uint32   | uint32       | uint32     | uint32    |
//	+------+-------+-------+--------------+----------+--------------+------------+-----------+
//	0      1       2       4              8          12             16           20          24
type BufferHeader struct {
	// Subpartition receives the data; AllSubpartitions in broadcast regions.
	Subpartition uint32
	// Codec encodes the payload; Flags qualify it.
	Codec Codec
	Flags BufferFlags
	// PayloadLength is the stored size, UncompressedLength the decoded
	// size (equal when Codec is CodecNone).
	PayloadLength      uint32
	UncompressedLength uint32
	// PayloadCRC is the producer's CRC32C of the stored payload bytes. The
	// worker stores it as received and never recomputes it.
	PayloadCRC uint32
}

const (
	bufKindOff         = 0
	bufCodecOff        = bufKindOff + 1
	bufFlagsOff        = bufCodecOff + 1
	bufSubpartitionOff = bufFlagsOff + 2
	bufPayloadLenOff   = bufSubpartitionOff + 4
	bufUncompLenOff    = bufPayloadLenOff + 4
	bufPayloadCRCOff   = bufUncompLenOff + 4
	bufHeaderCRCOff    = bufPayloadCRCOff + 4
	// BufferHeaderSize is the size of a buffer header.
	BufferHeaderSize = bufHeaderCRCOff + crcSize
)

// The buffer header is exactly 24 bytes, and it must stay at most 32.
const (
	_ uint = BufferHeaderSize - 24
	_ uint = 24 - BufferHeaderSize
)

func checkPayloadFields(codec Codec, flags BufferFlags, n, uncompressed uint32) string {
	switch {
	case !codec.valid():
		return fmt.Sprintf("unknown codec %d", codec)
	case flags&^flagsKnown != 0:
		return fmt.Sprintf("unknown flags %#04x", uint16(flags&^flagsKnown))
	case flags&FlagRawFallback != 0 && codec != CodecNone:
		return "raw-fallback flag on a compressed payload"
	case n > MaxPayloadSize:
		return fmt.Sprintf("payload length %d above %d", n, MaxPayloadSize)
	case uncompressed > MaxPayloadSize:
		return fmt.Sprintf("uncompressed length %d above %d", uncompressed, MaxPayloadSize)
	case codec == CodecNone && uncompressed != n:
		return fmt.Sprintf("raw payload of %d bytes with uncompressed length %d", n, uncompressed)
	case codec != CodecNone && (n == 0 || uncompressed == 0):
		return fmt.Sprintf("%v payload of %d bytes with uncompressed length %d", codec, n, uncompressed)
	}
	return ""
}

// Validate reports whether the format can hold h.
func (h *BufferHeader) Validate() error {
	if msg := checkPayloadFields(h.Codec, h.Flags, h.PayloadLength, h.UncompressedLength); msg != "" {
		return invalidf("buffer header: %s", msg)
	}
	return nil
}

// PutBufferHeader encodes h into b[:BufferHeaderSize], header CRC included.
func PutBufferHeader(b []byte, h *BufferHeader) error {
	if err := h.Validate(); err != nil {
		return err
	}
	if len(b) < BufferHeaderSize {
		return invalidf("buffer header needs %d bytes, have %d", BufferHeaderSize, len(b))
	}
	b = b[:BufferHeaderSize]
	b[bufKindOff] = itemBuffer
	b[bufCodecOff] = byte(h.Codec)
	binary.LittleEndian.PutUint16(b[bufFlagsOff:], uint16(h.Flags))
	binary.LittleEndian.PutUint32(b[bufSubpartitionOff:], h.Subpartition)
	binary.LittleEndian.PutUint32(b[bufPayloadLenOff:], h.PayloadLength)
	binary.LittleEndian.PutUint32(b[bufUncompLenOff:], h.UncompressedLength)
	binary.LittleEndian.PutUint32(b[bufPayloadCRCOff:], h.PayloadCRC)
	binary.LittleEndian.PutUint32(b[bufHeaderCRCOff:], Checksum(b[:bufHeaderCRCOff]))
	return nil
}

// DecodeBufferHeader decodes and checks the buffer header at the start of b,
// as it arrives on the wire; error offsets are relative to b. It allocates
// nothing unless it fails.
func DecodeBufferHeader(b []byte) (BufferHeader, error) {
	return decodeBufferHeader(b, KindMapPartition, 0)
}

func decodeBufferHeader(b []byte, kind FileKind, off int64) (BufferHeader, error) {
	if len(b) < BufferHeaderSize {
		return BufferHeader{}, truncatedAt(kind, off, int64(len(b)), BufferHeaderSize, "buffer header")
	}
	b = b[:BufferHeaderSize]
	if b[bufKindOff] != itemBuffer {
		return BufferHeader{}, corruptf(kind, off, 1, "item kind %#02x where a buffer header ('B') belongs", b[bufKindOff])
	}
	if err := checkCRC(kind, off, b[:bufHeaderCRCOff], b[bufHeaderCRCOff:], "buffer header CRC"); err != nil {
		return BufferHeader{}, err
	}
	h := BufferHeader{
		Codec:              Codec(b[bufCodecOff]),
		Flags:              BufferFlags(binary.LittleEndian.Uint16(b[bufFlagsOff:])),
		Subpartition:       binary.LittleEndian.Uint32(b[bufSubpartitionOff:]),
		PayloadLength:      binary.LittleEndian.Uint32(b[bufPayloadLenOff:]),
		UncompressedLength: binary.LittleEndian.Uint32(b[bufUncompLenOff:]),
		PayloadCRC:         binary.LittleEndian.Uint32(b[bufPayloadCRCOff:]),
	}
	if msg := checkPayloadFields(h.Codec, h.Flags, h.PayloadLength, h.UncompressedLength); msg != "" {
		return BufferHeader{}, corruptf(kind, off, BufferHeaderSize, "buffer header: %s", msg)
	}
	return h, nil
}

// FrameSize returns the size of the buffer: header and payload. A reader
// that walks an extent steps from one buffer to the next by it.
func (h *BufferHeader) FrameSize() int64 { return BufferHeaderSize + int64(h.PayloadLength) }

// CheckPayload checks that p is the payload h describes: its length and the
// producer's CRC32C. Error offsets are relative to the header's start.
// It allocates nothing unless it fails.
func (h *BufferHeader) CheckPayload(p []byte) error {
	return checkPayload(KindMapPartition, BufferHeaderSize, p, h.PayloadLength, h.PayloadCRC, bufPayloadCRCOff, "buffer payload CRC")
}

// checkPayload checks payload p at offset off against its length n and
// stored CRC want, which sits at crcOff (in the header before the payload).
func checkPayload(kind FileKind, off int64, p []byte, n, want uint32, crcOff int64, what string) error {
	if len(p) != int(n) {
		return mismatch(kind, off, int64(len(p)), "payload length", uint64(n), uint64(len(p)))
	}
	if got := Checksum(p); got != want {
		e := mismatch(kind, off, int64(n), what, uint64(want), uint64(got))
		e.Flip = explainFlip(off, int64(n), crcOff, want, got)
		return e
	}
	return nil
}
