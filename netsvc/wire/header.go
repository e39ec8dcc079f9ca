package wire

import (
	"encoding/binary"
	"time"

	"github.com/sluice-shuffle/sluice/layout"
)

// Header is the fixed-size header at the start of every frame.
//
//	+---------+------+-------+----------+---------+--------+----------+----------+
//	| version | type | flags | reserved | channel | body   | body     | header   |
//	| u8      | u8   | u8    | u8       | u32     | length | CRC32C   | CRC32C   |
//	|         |      |       |          |         | u32    | u32      | u32      |
//	+---------+------+-------+----------+---------+--------+----------+----------+
//	0         1      2       3          4         8        12         16         20
//
// The layout of the header never changes, in any major: it is what lets
// any build read a peer's ERROR about versions.
type Header struct {
	// Version is the negotiated protocol major, or 0 in the frames of the
	// handshake (HELLO, HELLO_ACK, and an ERROR answering a HELLO).
	Version uint8
	Type    Type
	// Flags are the frame flags; protocol 1.0 defines none, so they are 0.
	Flags uint8
	// Channel is the logical channel, assigned by the client; 0 is the
	// connection itself.
	Channel uint32
	// Length is the body length in bytes, the header excluded.
	Length uint32
	// BodyCRC is the CRC32C of the body's fields: the whole body of a
	// control message, the fixed fields before the stored bytes of a data
	// message (0, the CRC of nothing, when there are none).
	BodyCRC uint32
}

const (
	hdrVersionOff  = 0
	hdrTypeOff     = hdrVersionOff + 1
	hdrFlagsOff    = hdrTypeOff + 1
	hdrReservedOff = hdrFlagsOff + 1
	hdrChannelOff  = hdrReservedOff + 1
	hdrLengthOff   = hdrChannelOff + 4
	hdrBodyCRCOff  = hdrLengthOff + 4
	hdrCRCOff      = hdrBodyCRCOff + 4
	// HeaderSize is the size of a frame header.
	HeaderSize = hdrCRCOff + 4
)

const _ uint = 20 - HeaderSize // the header is 20 bytes...
const _ uint = HeaderSize - 20 // ...exactly

// Limits of protocol 1.x.
const (
	// MaxControlBody bounds the body of every control message (every
	// type but WRITE_DATA, PUSH_DATA and READ_DATA), whatever the
	// negotiated frame limit.
	MaxControlBody = 64 << 10

	// ReadDataFieldsSize is the size of READ_DATA's fixed fields.
	ReadDataFieldsSize = 12

	// MaxStoredBody is the body of the largest data frame that carries one
	// maximal stored item: READ_DATA's fields and one segment of
	// layout.MaxPayloadSize bytes.
	MaxStoredBody = ReadDataFieldsSize + SegmentHeaderSize + layout.MaxPayloadSize

	// MinFrameLimit is the smallest frame limit a peer may announce;
	// DefaultFrameLimit lets every stored item through in one frame.
	MinFrameLimit     = 1 << 20
	DefaultFrameLimit = MaxStoredBody

	// Defaults of a server's other limits (HELLO_ACK).
	DefaultMaxChannels       = 1 << 16
	DefaultConnectionMemory  = 256 << 20
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	// HandshakeTimeout bounds the time from accepting a connection to
	// HELLO_ACK (server) and from connecting to HELLO_ACK (client).
	HandshakeTimeout = 10 * time.Second

	// Bounds of variable fields.
	MaxIDSize        = layout.MaxIDSize // job and dataset ids: 1 to 128 bytes
	MaxClientIDSize  = 128
	MaxAuthTokenSize = 4096
	MaxMessageSize   = 1024 // ERROR and CLOSE_CHANNEL messages
	MaxServerName    = 255
	MaxCreditEntries = (MaxControlBody - 4) / creditEntrySize
)

// PutHeader encodes h into b[:HeaderSize], header CRC included. The
// reserved byte is written as zero.
func PutHeader(b []byte, h Header) {
	b = b[:HeaderSize]
	b[hdrVersionOff] = h.Version
	b[hdrTypeOff] = byte(h.Type)
	b[hdrFlagsOff] = h.Flags
	b[hdrReservedOff] = 0
	binary.LittleEndian.PutUint32(b[hdrChannelOff:], h.Channel)
	binary.LittleEndian.PutUint32(b[hdrLengthOff:], h.Length)
	binary.LittleEndian.PutUint32(b[hdrBodyCRCOff:], h.BodyCRC)
	binary.LittleEndian.PutUint32(b[hdrCRCOff:], Checksum(b[:hdrCRCOff]))
}

// AppendHeader appends the encoding of h to dst.
func AppendHeader(dst []byte, h Header) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	PutHeader(dst[n:], h)
	return dst
}

// HeaderRules are what a receiver checks a frame header against.
type HeaderRules struct {
	// Version is the negotiated major, or 0 until the handshake is done.
	Version uint8
	// MaxFrameBytes is the limit the receiver announced for data bodies
	// (and the bodies of unknown types, which it skips).
	MaxFrameBytes uint32
	// Receiver is SideServer or SideClient: a type only the receiver may
	// send is OUT_OF_ORDER. Zero skips the check.
	Receiver Side
}

// DecodeHeader decodes and checks the frame header at the start of b
// (which needs HeaderSize bytes). It allocates nothing unless it fails.
//
// On failure the error is an *Error. When its Fatal flag is clear, the
// header itself is sound and the returned Header is valid: the receiver
// skips Length body bytes, sends an ERROR with the code on the channel
// and carries on (PROTOCOL.md, "Errors in frames"). A fatal error ends the
// connection.
func DecodeHeader(b []byte, rules HeaderRules) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, &Error{Code: CodeMalformed, Fatal: true, Msg: "frame header needs 20 bytes"}
	}
	b = b[:HeaderSize]
	if got, want := Checksum(b[:hdrCRCOff]), binary.LittleEndian.Uint32(b[hdrCRCOff:]); got != want {
		return Header{}, errorf(CodeBadHeaderCRC, 0, "frame header CRC %#08x, computed %#08x", want, got)
	}
	h := Header{
		Version: b[hdrVersionOff],
		Type:    Type(b[hdrTypeOff]),
		Flags:   b[hdrFlagsOff],
		Channel: binary.LittleEndian.Uint32(b[hdrChannelOff:]),
		Length:  binary.LittleEndian.Uint32(b[hdrLengthOff:]),
		BodyCRC: binary.LittleEndian.Uint32(b[hdrBodyCRCOff:]),
	}
	if err := rules.check(&h, b[hdrReservedOff]); err != nil {
		return h, err
	}
	return h, nil
}

func (r *HeaderRules) check(h *Header, reserved byte) *Error {
	info, known := h.Type.Info()
	handshake := h.Type == TypeHello || h.Type == TypeHelloAck
	switch {
	case r.Version == 0 && (!handshake && h.Type != TypeError || h.Version != 0):
		return errorf(CodeProtocol, 0, "%v frame with version byte %d during the handshake", h.Type, h.Version)
	case r.Version != 0 && handshake:
		return errorf(CodeProtocol, 0, "%v after the handshake", h.Type)
	case r.Version != 0 && h.Version != r.Version && !(h.Type == TypeError && h.Version == 0):
		return errorf(CodeVersion, 0, "%v frame with version byte %d on a connection of major %d", h.Type, h.Version, r.Version)
	}
	limit := r.MaxFrameBytes
	if known && !info.Data {
		limit = MaxControlBody
	}
	if h.Length > limit {
		return errorf(CodeFrameTooLarge, 0, "%v body of %d bytes on channel %d, limit %d", h.Type, h.Length, h.Channel, limit)
	}
	fatal := h.Channel == 0
	fail := func(code Code, format string, args ...any) *Error {
		e := errorf(code, h.Channel, format, args...)
		e.Fatal = e.Fatal || fatal && code != CodeUnknownType
		return e
	}
	switch {
	case reserved != 0:
		return fail(CodeMalformed, "%v frame with reserved byte %#02x", h.Type, reserved)
	case h.Flags != 0:
		return fail(CodeMalformed, "%v frame with unknown flags %#02x", h.Type, h.Flags)
	case !known:
		return fail(CodeUnknownType, "unknown message type %#02x", uint8(h.Type))
	case info.Kind == KindConnection && h.Channel != 0:
		return fail(CodeMalformed, "%v on channel %d: it belongs to channel 0", h.Type, h.Channel)
	case info.Kind != KindConnection && info.Kind != KindAny && h.Channel == 0:
		return fail(CodeMalformed, "%v on channel 0", h.Type)
	case h.Type == TypeError && h.Channel != 0 && r.Receiver == SideServer:
		return fail(CodeOutOfOrder, "ERROR on channel %d from a client: a client ends a channel with CLOSE_CHANNEL", h.Channel)
	case r.Receiver != 0 && info.From == r.Receiver:
		return fail(CodeOutOfOrder, "%v is sent by the %v only", h.Type, r.Receiver)
	case info.Data && h.Length < uint32(minDataBody(h.Type)):
		return fail(CodeMalformed, "%v body of %d bytes, at least %d", h.Type, h.Length, minDataBody(h.Type))
	}
	return nil
}

// minDataBody is the shortest valid body of a data type.
func minDataBody(t Type) int {
	switch t {
	case TypeWriteData:
		return BufferHeaderSize
	case TypePushData:
		return SegmentHeaderSize
	}
	return typeInfos[t].Fields
}

// StoredLength returns the number of stored bytes a data frame with header
// h carries (its body after the fixed fields); 0 for control frames.
func (h *Header) StoredLength() int {
	info := typeInfos[h.Type]
	if !info.Data || int(h.Length) < info.Fields {
		return 0
	}
	return int(h.Length) - info.Fields
}

// PutDataHeader encodes, into b[:HeaderSize], the header of a WRITE_DATA or
// PUSH_DATA frame whose body is the stored bytes of length n that follow
// it: a sender builds the stored buffer after HeaderSize bytes of headroom
// and sends header and body in one write.
func PutDataHeader(b []byte, version uint8, t Type, channel uint32, n int) {
	PutHeader(b, Header{Version: version, Type: t, Channel: channel, Length: uint32(n)})
}

// AppendReadDataHeader appends the header and the fixed fields of a
// READ_DATA frame that carries n stored bytes, which the sender writes
// after them (writev from its read buffers).
func AppendReadDataHeader(dst []byte, version uint8, channel uint32, backlog uint64, next uint32, n int) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	dst = binary.LittleEndian.AppendUint64(dst, backlog)
	dst = binary.LittleEndian.AppendUint32(dst, next)
	PutHeader(dst[start:], Header{Version: version, Type: TypeReadData, Channel: channel,
		Length: uint32(ReadDataFieldsSize + n), BodyCRC: Checksum(dst[start+HeaderSize:])})
	return dst
}

// ReadDataFields are the fixed fields of READ_DATA.
type ReadDataFields struct {
	// Backlog is the number of stored bytes the worker still has to send
	// on the channel after this frame (an upper bound for a
	// ReducePartition, whose duplicate segments are skipped).
	Backlog uint64
	// Next is the size of the next whole buffer or segment the worker
	// will send, or 0 when there is none or it is not known yet. A reader
	// whose remaining credit is below Next grants more.
	Next uint32
}

// DecodeReadDataFields decodes READ_DATA's fixed fields from b (at least
// ReadDataFieldsSize bytes, the start of the body) and checks them against
// the header's body CRC. It allocates nothing unless it fails.
func DecodeReadDataFields(h *Header, b []byte) (ReadDataFields, error) {
	if h.Type != TypeReadData || len(b) < ReadDataFieldsSize {
		return ReadDataFields{}, &Error{Code: CodeMalformed, Channel: h.Channel, Msg: "READ_DATA fields need 12 bytes"}
	}
	b = b[:ReadDataFieldsSize]
	if got := Checksum(b); got != h.BodyCRC {
		return ReadDataFields{}, &Error{Code: CodeBadBodyCRC, Channel: h.Channel,
			Msg: "READ_DATA fields CRC mismatch"}
	}
	return ReadDataFields{Backlog: binary.LittleEndian.Uint64(b), Next: binary.LittleEndian.Uint32(b[8:])}, nil
}

// CheckBody checks a body against its header: the body CRC over the
// fields (the whole body of a control message). Data frames' stored bytes
// are checked by their own CRCs (see DecodeBufferHeader).
func CheckBody(h *Header, body []byte) error {
	fields := body
	if info := typeInfos[h.Type]; info.Data {
		if len(body) < info.Fields {
			return &Error{Code: CodeMalformed, Channel: h.Channel, Fatal: h.Channel == 0,
				Msg: h.Type.String() + " body shorter than its fields"}
		}
		fields = body[:info.Fields]
	}
	if got := Checksum(fields); got != h.BodyCRC {
		return &Error{Code: CodeBadBodyCRC, Channel: h.Channel, Fatal: h.Channel == 0,
			Msg: h.Type.String() + " body CRC mismatch"}
	}
	return nil
}
