package wire

import (
	"encoding/binary"
	"fmt"
)

// Magic starts the bodies of HELLO and HELLO_ACK: a Sluice peer, data
// plane protocol.
const Magic = "SLUICEWP"

// Message is the body of one message type. Encoders do not check field
// values (a receiver refuses what the protocol does not allow, see
// DecodeBody); decoders check every field and length, alias the body for
// byte fields and allocate nothing unless they fail.
type Message interface {
	Type() Type
	// AppendBody appends the body: for data types the fixed fields and
	// then the stored bytes.
	AppendBody(dst []byte) []byte
	// DecodeBody decodes a body whose header and body CRC were checked.
	// It returns an *Error (MALFORMED, or BAD_MAGIC for a HELLO) whose
	// Channel the caller sets; DecodeMessage does it.
	DecodeBody(body []byte) error
}

// AppendFrame appends a whole frame (header and body) carrying m on the
// given channel. The handshake frames (HELLO, HELLO_ACK, and an ERROR
// answering a HELLO) use version 0, all others the negotiated major
// (Version.HeaderVersion). Every message type also has its own AppendFrame
// method, which does not go through an interface and so never allocates
// when dst has room.
func AppendFrame(dst []byte, version uint8, channel uint32, m Message) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, m.Type(), channel)
}

func beginFrame(dst []byte) ([]byte, int) {
	s := len(dst)
	return append(dst, make([]byte, HeaderSize)...), s
}

func endFrame(dst []byte, s int, version uint8, t Type, channel uint32) []byte {
	body := dst[s+HeaderSize:]
	fields := body
	if info := typeInfos[t]; info.Data {
		fields = body[:info.Fields]
	}
	PutHeader(dst[s:], Header{Version: version, Type: t, Channel: channel,
		Length: uint32(len(body)), BodyCRC: Checksum(fields)})
	return dst
}

// NewMessage returns a zero message of type t, or nil for an unknown type.
func NewMessage(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeHelloAck:
		return new(HelloAck)
	case TypeError:
		return new(ErrorMsg)
	case TypeHeartbeat:
		return new(Heartbeat)
	case TypeCloseConnection:
		return new(CloseConnection)
	case TypeCreditBatch:
		return new(CreditBatch)
	case TypeCredit:
		return new(Credit)
	case TypeCloseChannel:
		return new(CloseChannel)
	case TypeChannelClosed:
		return new(ChannelClosed)
	case TypeWriteOpen:
		return new(WriteOpen)
	case TypeWriteOpened:
		return new(WriteOpened)
	case TypeRegionStart:
		return new(RegionStart)
	case TypeWriteData:
		return new(WriteData)
	case TypeRegionFinish:
		return new(RegionFinish)
	case TypeWriteFinish:
		return new(WriteFinish)
	case TypeWriteCommitted:
		return new(WriteCommitted)
	case TypePushOpen:
		return new(PushOpen)
	case TypePushOpened:
		return new(PushOpened)
	case TypePushData:
		return new(PushData)
	case TypePushAck:
		return new(PushAck)
	case TypePushCommit:
		return new(PushCommit)
	case TypePushCommitted:
		return new(PushCommitted)
	case TypePushAbort:
		return new(PushAbort)
	case TypePushAborted:
		return new(PushAborted)
	case TypeReadOpen:
		return new(ReadOpen)
	case TypeReadOpened:
		return new(ReadOpened)
	case TypeReadData:
		return new(ReadData)
	case TypeReadEnd:
		return new(ReadEnd)
	}
	return nil
}

// DecodeMessage checks the body against its header (CheckBody) and decodes
// it into a new message. Errors are *Error with the header's channel, fatal
// when the channel is 0. It allocates the message; a receiver on a hot path
// switches on h.Type and decodes into a message of its own instead.
func DecodeMessage(h *Header, body []byte) (Message, error) {
	if len(body) != int(h.Length) {
		return nil, &Error{Code: CodeMalformed, Channel: h.Channel, Fatal: h.Channel == 0,
			Msg: fmt.Sprintf("%v body is %d bytes, the header says %d", h.Type, len(body), h.Length)}
	}
	m := NewMessage(h.Type)
	if m == nil {
		return nil, &Error{Code: CodeUnknownType, Channel: h.Channel, Msg: fmt.Sprintf("unknown message type %#02x", uint8(h.Type))}
	}
	if err := CheckBody(h, body); err != nil {
		return nil, err
	}
	if err := m.DecodeBody(body); err != nil {
		if e, ok := err.(*Error); ok {
			e.Channel = h.Channel
			e.Fatal = e.Fatal || h.Channel == 0
		}
		return nil, err
	}
	return m, nil
}

// dec reads the fields of one body. The first problem sticks; reads after
// it return zeros.
type dec struct {
	t   Type
	b   []byte
	off int
	err *Error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = malformed(d.t, format, args...)
	}
}

func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.fail("%s at offset %d needs %d bytes, the body has %d", what, d.off, n, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p
}

func (d *dec) u8(what string) uint8 {
	if p := d.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *dec) u16(what string) uint16 {
	if p := d.take(2, what); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *dec) u32(what string) uint32 {
	if p := d.take(4, what); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *dec) u64(what string) uint64 {
	if p := d.take(8, what); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// str8 reads a u8 length and that many bytes, lo ≤ length ≤ hi.
func (d *dec) str8(what string, lo, hi int) []byte {
	p := d.take(1, what) // the length (no string concatenation: decoding allocates nothing)
	if p == nil {
		return nil
	}
	n := int(p[0])
	if n < lo || n > hi {
		d.fail("%s length %d, want %d to %d", what, n, lo, hi)
	}
	return d.take(n, what)
}

// str16 reads a u16 length and that many bytes, length ≤ hi.
func (d *dec) str16(what string, hi int) []byte {
	p := d.take(2, what)
	if p == nil {
		return nil
	}
	n := int(binary.LittleEndian.Uint16(p))
	if n > hi {
		d.fail("%s length %d, at most %d", what, n, hi)
	}
	return d.take(n, what)
}

func (d *dec) id(what string) []byte { return d.str8(what, 1, MaxIDSize) }

func (d *dec) zero8(what string) {
	if v := d.u8(what); v != 0 {
		d.fail("%s %#02x: reserved bits are zero in 1.0", what, v)
	}
}

// done checks that the body ends here (or, for an extensible message, at
// least that it held every known field) and returns the error, if any.
func (d *dec) done() error {
	if d.err == nil && d.off != len(d.b) && !typeInfos[d.t].Extensible {
		d.fail("body is %d bytes, its fields take %d", len(d.b), d.off)
	}
	if d.err != nil {
		return d.err
	}
	return nil
}

func appendStr8(dst, s []byte) []byte { return append(append(dst, byte(len(s))), s...) }
func appendStr16(dst, s []byte) []byte {
	return append(binary.LittleEndian.AppendUint16(dst, uint16(len(s))), s...)
}

var (
	le32 = binary.LittleEndian.AppendUint32
	le64 = binary.LittleEndian.AppendUint64
	le16 = binary.LittleEndian.AppendUint16
)

func boolBit(b bool, bit uint8) uint8 {
	if b {
		return bit
	}
	return 0
}

// ---- connection messages ----

// Hello is the client's first frame (channel 0, version byte 0).
type Hello struct {
	VersionMin, VersionMax Version // the versions the client speaks
	MaxFrameBytes          uint32  // the largest body the client accepts, ≥ MinFrameLimit
	Flags                  uint32  // capability bits; none in 1.0 (sent 0, ignored)
	ClientID               []byte  // free-form, for logs: 0 to 128 bytes
	AuthToken              []byte  // opaque, 0 to 4096 bytes
}

func (*Hello) Type() Type { return TypeHello }
func (m *Hello) AppendBody(dst []byte) []byte {
	dst = append(dst, Magic...)
	dst = le32(le32(dst, uint32(m.VersionMin)), uint32(m.VersionMax))
	dst = le32(le32(dst, m.MaxFrameBytes), m.Flags)
	dst = appendStr8(dst, m.ClientID)
	return appendStr16(dst, m.AuthToken)
}
func (m *Hello) DecodeBody(b []byte) error {
	d := dec{t: TypeHello, b: b}
	if magic := d.take(len(Magic), "magic"); d.err == nil && string(magic) != Magic {
		return &Error{Code: CodeBadMagic, Fatal: true, Msg: fmt.Sprintf("HELLO starts with %q, not %q", magic, Magic)}
	}
	m.VersionMin = Version(d.u32("version min"))
	m.VersionMax = Version(d.u32("version max"))
	m.MaxFrameBytes = d.u32("max frame bytes")
	m.Flags = d.u32("flags")
	m.ClientID = d.str8("client id", 0, MaxClientIDSize)
	m.AuthToken = d.str16("auth token", MaxAuthTokenSize)
	switch {
	case d.err != nil:
	case m.VersionMin > m.VersionMax:
		d.fail("version range %v to %v is empty", m.VersionMin, m.VersionMax)
	case m.MaxFrameBytes < MinFrameLimit:
		d.fail("max frame bytes %d below the minimum %d", m.MaxFrameBytes, MinFrameLimit)
	}
	return d.done()
}
func (m *Hello) AppendFrame(dst []byte) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, 0, TypeHello, 0)
}

// HelloAck is the server's answer to a HELLO it accepts (channel 0,
// version byte 0).
type HelloAck struct {
	Version           Version  // the negotiated version
	WorkerID          [16]byte // the worker's stable id
	MaxFrameBytes     uint32   // the largest body the server accepts, ≥ MinFrameLimit
	MaxChannels       uint32   // channels open at once on this connection, ≥ 1
	MemoryBytes       uint64   // write credit plus queued read data the server allows the connection
	HeartbeatMillis   uint32   // send a HEARTBEAT after this long without sending, ≥ 1
	IdleTimeoutMillis uint32   // the peer is dead after this long without receiving, > HeartbeatMillis
	Flags             uint32   // capability bits; none in 1.0 (sent 0, ignored)
	ServerName        []byte   // free-form, for logs: 0 to 255 bytes
}

func (*HelloAck) Type() Type { return TypeHelloAck }
func (m *HelloAck) AppendBody(dst []byte) []byte {
	dst = append(dst, Magic...)
	dst = le32(dst, uint32(m.Version))
	dst = append(dst, m.WorkerID[:]...)
	dst = le32(le32(dst, m.MaxFrameBytes), m.MaxChannels)
	dst = le64(dst, m.MemoryBytes)
	dst = le32(le32(le32(dst, m.HeartbeatMillis), m.IdleTimeoutMillis), m.Flags)
	return appendStr8(dst, m.ServerName)
}
func (m *HelloAck) DecodeBody(b []byte) error {
	d := dec{t: TypeHelloAck, b: b}
	if magic := d.take(len(Magic), "magic"); d.err == nil && string(magic) != Magic {
		return &Error{Code: CodeBadMagic, Fatal: true, Msg: fmt.Sprintf("HELLO_ACK starts with %q, not %q", magic, Magic)}
	}
	m.Version = Version(d.u32("version"))
	copy(m.WorkerID[:], d.take(16, "worker id"))
	m.MaxFrameBytes = d.u32("max frame bytes")
	m.MaxChannels = d.u32("max channels")
	m.MemoryBytes = d.u64("memory bytes")
	m.HeartbeatMillis = d.u32("heartbeat interval")
	m.IdleTimeoutMillis = d.u32("idle timeout")
	m.Flags = d.u32("flags")
	m.ServerName = d.str8("server name", 0, MaxServerName)
	switch {
	case d.err != nil:
	case m.MaxFrameBytes < MinFrameLimit:
		d.fail("max frame bytes %d below the minimum %d", m.MaxFrameBytes, MinFrameLimit)
	case m.MaxChannels == 0:
		d.fail("max channels is 0")
	case m.HeartbeatMillis == 0 || m.IdleTimeoutMillis <= m.HeartbeatMillis:
		d.fail("heartbeat interval %d ms with idle timeout %d ms", m.HeartbeatMillis, m.IdleTimeoutMillis)
	}
	return d.done()
}
func (m *HelloAck) AppendFrame(dst []byte) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, 0, TypeHelloAck, 0)
}

// Flag bits of ErrorMsg.
const (
	ErrorRetryable uint8 = 1 << 0
	ErrorFatal     uint8 = 1 << 1
)

// ErrorMsg is an ERROR frame. On a channel (server → client only) it ends
// the channel; on channel 0 it concerns the connection, which closes after
// it when Fatal is set.
type ErrorMsg struct {
	Code      Code
	Retryable bool // a retry may succeed (see Code.Retryable); decides for unknown codes
	Fatal     bool // the sender closes the connection after this frame
	// VersionMin and VersionMax are the versions the sender speaks, in
	// every ERROR, so that a version mismatch names both sides.
	VersionMin, VersionMax Version
	Message                []byte // UTF-8, 0 to 1024 bytes
}

func (*ErrorMsg) Type() Type { return TypeError }
func (m *ErrorMsg) AppendBody(dst []byte) []byte {
	dst = le16(dst, uint16(m.Code))
	dst = append(dst, boolBit(m.Retryable, ErrorRetryable)|boolBit(m.Fatal, ErrorFatal), 0)
	dst = le32(le32(dst, uint32(m.VersionMin)), uint32(m.VersionMax))
	return appendStr16(dst, m.Message)
}
func (m *ErrorMsg) DecodeBody(b []byte) error {
	d := dec{t: TypeError, b: b}
	m.Code = Code(d.u16("code"))
	flags := d.u8("flags")
	m.Retryable, m.Fatal = flags&ErrorRetryable != 0, flags&ErrorFatal != 0
	d.u8("reserved") // ERROR is extensible: reserved bits are ignored
	m.VersionMin = Version(d.u32("version min"))
	m.VersionMax = Version(d.u32("version max"))
	m.Message = d.str16("message", MaxMessageSize)
	return d.done()
}
func (m *ErrorMsg) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeError, channel)
}

// Err turns a received ERROR into an error that matches its code.
func (m *ErrorMsg) Err(channel uint32) *Error {
	return &Error{Code: m.Code, Channel: channel, Fatal: m.Fatal, Msg: "from peer: " + string(m.Message)}
}

// NewErrorMsg is the ERROR frame for e, sent by a peer speaking [lo, hi].
func NewErrorMsg(e *Error, lo, hi Version) ErrorMsg {
	msg := e.Msg
	if len(msg) > MaxMessageSize {
		msg = msg[:MaxMessageSize]
	}
	return ErrorMsg{Code: e.Code, Retryable: e.Code.Retryable(), Fatal: e.Fatal,
		VersionMin: lo, VersionMax: hi, Message: []byte(msg)}
}

// Heartbeat is sent by either side after HeartbeatMillis without sending.
type Heartbeat struct{}

func (*Heartbeat) Type() Type                   { return TypeHeartbeat }
func (*Heartbeat) AppendBody(dst []byte) []byte { return dst }
func (*Heartbeat) DecodeBody(b []byte) error    { d := dec{t: TypeHeartbeat, b: b}; return d.done() }
func (m *Heartbeat) AppendFrame(dst []byte, version uint8) []byte {
	dst, s := beginFrame(dst)
	return endFrame(dst, s, version, TypeHeartbeat, 0)
}

// CloseConnection announces a graceful close: the sender opens (client) or
// accepts (server) no new channel; channels in flight run to their end;
// then the client closes the connection. TimeoutMillis bounds the wait:
// after it the sender closes the connection whatever is in flight (0: no
// bound).
type CloseConnection struct {
	TimeoutMillis uint32
}

func (*CloseConnection) Type() Type                     { return TypeCloseConnection }
func (m *CloseConnection) AppendBody(dst []byte) []byte { return le32(dst, m.TimeoutMillis) }
func (m *CloseConnection) DecodeBody(b []byte) error {
	d := dec{t: TypeCloseConnection, b: b}
	m.TimeoutMillis = d.u32("timeout")
	return d.done()
}
func (m *CloseConnection) AppendFrame(dst []byte, version uint8) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeCloseConnection, 0)
}

// CreditEntry grants Bytes of credit to one channel.
type CreditEntry struct {
	Channel uint32
	Bytes   uint32
}

const creditEntrySize = 8

// CreditBatch grants credit to many channels in one frame (channel 0).
type CreditBatch struct {
	Entries []CreditEntry // 1 to MaxCreditEntries; channels ≠ 0, bytes ≥ 1
}

func (*CreditBatch) Type() Type { return TypeCreditBatch }
func (m *CreditBatch) AppendBody(dst []byte) []byte {
	dst = le32(dst, uint32(len(m.Entries)))
	for _, e := range m.Entries {
		dst = le32(le32(dst, e.Channel), e.Bytes)
	}
	return dst
}

// DecodeBody reuses m.Entries' capacity, so a receiver that keeps one
// CreditBatch allocates nothing in steady state.
func (m *CreditBatch) DecodeBody(b []byte) error {
	d := dec{t: TypeCreditBatch, b: b}
	n := d.u32("entry count")
	switch {
	case d.err != nil:
		return d.err
	case n == 0 || n > MaxCreditEntries:
		d.fail("entry count %d, want 1 to %d", n, MaxCreditEntries)
		return d.err
	case len(b) != 4+int(n)*creditEntrySize:
		d.fail("body is %d bytes, %d entries take %d", len(b), n, 4+int(n)*creditEntrySize)
		return d.err
	}
	m.Entries = m.Entries[:0]
	for range n {
		e := CreditEntry{Channel: d.u32("channel"), Bytes: d.u32("bytes")}
		if d.err == nil && (e.Channel == 0 || e.Bytes == 0) {
			d.fail("entry %d grants %d bytes to channel %d", len(m.Entries), e.Bytes, e.Channel)
		}
		m.Entries = append(m.Entries, e)
	}
	return d.done()
}
func (m *CreditBatch) AppendFrame(dst []byte, version uint8) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeCreditBatch, 0)
}

// ---- messages of every channel kind ----

// Credit grants Bytes more bytes of credit on its channel: write credit
// from the server on write and push channels, read credit from the client
// on read channels.
type Credit struct {
	Bytes uint32 // ≥ 1
}

func (*Credit) Type() Type                     { return TypeCredit }
func (m *Credit) AppendBody(dst []byte) []byte { return le32(dst, m.Bytes) }
func (m *Credit) DecodeBody(b []byte) error {
	d := dec{t: TypeCredit, b: b}
	if m.Bytes = d.u32("bytes"); d.err == nil && m.Bytes == 0 {
		d.fail("a grant of 0 bytes")
	}
	return d.done()
}
func (m *Credit) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeCredit, channel)
}

// CloseChannel ends a channel from the client's side: a cancelled read, an
// abandoned write (its partition is discarded unless committed), or a
// channel the client found broken (Reason names why).
type CloseChannel struct {
	Reason  Code   // CodeOK for a normal close
	Message []byte // UTF-8, 0 to 1024 bytes
}

func (*CloseChannel) Type() Type { return TypeCloseChannel }
func (m *CloseChannel) AppendBody(dst []byte) []byte {
	return appendStr16(le16(dst, uint16(m.Reason)), m.Message)
}
func (m *CloseChannel) DecodeBody(b []byte) error {
	d := dec{t: TypeCloseChannel, b: b}
	m.Reason = Code(d.u16("reason"))
	m.Message = d.str16("message", MaxMessageSize)
	return d.done()
}
func (m *CloseChannel) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeCloseChannel, channel)
}

// ChannelClosed answers CLOSE_CHANNEL, always, even for a channel the
// server no longer knows; after it the client may reuse the id.
type ChannelClosed struct{}

func (*ChannelClosed) Type() Type                   { return TypeChannelClosed }
func (*ChannelClosed) AppendBody(dst []byte) []byte { return dst }
func (*ChannelClosed) DecodeBody(b []byte) error {
	d := dec{t: TypeChannelClosed, b: b}
	return d.done()
}
func (m *ChannelClosed) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(dst, s, version, TypeChannelClosed, channel)
}

// ---- MapPartition write ----

// WriteOpen opens a channel that writes one MapPartition: one attempt of
// one producer.
type WriteOpen struct {
	Map, Attempt   uint32
	Subpartitions  uint32 // R ≥ 1
	Codec          Codec  // the partition's codec: buffers use it or none
	MaxBufferBytes uint32 // the largest stored buffer the client sends, header included: 25 to BufferHeaderSize+MaxPayloadSize
	SizeHint       uint64 // expected stored bytes, 0 when unknown
	Job, Dataset   []byte // 1 to 128 bytes each
}

func (*WriteOpen) Type() Type { return TypeWriteOpen }
func (m *WriteOpen) AppendBody(dst []byte) []byte {
	dst = le32(le32(le32(dst, m.Map), m.Attempt), m.Subpartitions)
	dst = append(dst, byte(m.Codec), 0)
	dst = le64(le32(dst, m.MaxBufferBytes), m.SizeHint)
	return appendStr8(appendStr8(dst, m.Job), m.Dataset)
}
func (m *WriteOpen) DecodeBody(b []byte) error {
	d := dec{t: TypeWriteOpen, b: b}
	m.Map = d.u32("map index")
	m.Attempt = d.u32("attempt")
	m.Subpartitions = d.u32("subpartition count")
	m.Codec = Codec(d.u8("codec"))
	d.zero8("flags")
	m.MaxBufferBytes = d.u32("max buffer bytes")
	m.SizeHint = d.u64("size hint")
	m.Job = d.id("job id")
	m.Dataset = d.id("dataset id")
	switch {
	case d.err != nil:
	case m.Subpartitions == 0:
		d.fail("subpartition count 0")
	case m.Codec > CodecLZ4:
		d.fail("unknown codec %d", m.Codec)
	case m.MaxBufferBytes <= BufferHeaderSize || m.MaxBufferBytes > BufferHeaderSize+MaxPayloadSize:
		d.fail("max buffer bytes %d, want %d to %d", m.MaxBufferBytes, BufferHeaderSize+1, BufferHeaderSize+MaxPayloadSize)
	}
	return d.done()
}
func (m *WriteOpen) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeWriteOpen, channel)
}

// WriteOpened accepts a WRITE_OPEN with the channel's first write credit.
type WriteOpened struct {
	Credit uint32 // bytes; may be 0 (CREDIT follows)
}

func (*WriteOpened) Type() Type                     { return TypeWriteOpened }
func (m *WriteOpened) AppendBody(dst []byte) []byte { return le32(dst, m.Credit) }
func (m *WriteOpened) DecodeBody(b []byte) error {
	d := dec{t: TypeWriteOpened, b: b}
	m.Credit = d.u32("credit")
	return d.done()
}
func (m *WriteOpened) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeWriteOpened, channel)
}

// RegionFlagBroadcast marks a broadcast region.
const RegionFlagBroadcast uint8 = 1 << 0

// RegionStart starts a region: one client sort-spill.
type RegionStart struct {
	Region      uint32 // 0, 1, 2, … in order
	Broadcast   bool   // every buffer has subpartition AllSubpartitions
	RecordBytes uint64 // uncompressed bytes the region holds, a sizing hint; 0 when unknown
}

func (*RegionStart) Type() Type { return TypeRegionStart }
func (m *RegionStart) AppendBody(dst []byte) []byte {
	dst = append(le32(dst, m.Region), boolBit(m.Broadcast, RegionFlagBroadcast))
	return le64(dst, m.RecordBytes)
}
func (m *RegionStart) DecodeBody(b []byte) error {
	d := dec{t: TypeRegionStart, b: b}
	m.Region = d.u32("region")
	flags := d.u8("flags")
	if d.err == nil && flags&^RegionFlagBroadcast != 0 {
		d.fail("unknown region flags %#02x", flags)
	}
	m.Broadcast = flags&RegionFlagBroadcast != 0
	m.RecordBytes = d.u64("record bytes")
	return d.done()
}
func (m *RegionStart) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeRegionStart, channel)
}

// WriteData carries one stored buffer. On the hot path a client builds the
// buffer after HeaderSize bytes of headroom and calls PutDataHeader; a
// server reads the header with FrameReader and the body straight into its
// write buffer.
type WriteData struct {
	Stored []byte // one stored buffer: its 24-byte header and payload
}

func (*WriteData) Type() Type                     { return TypeWriteData }
func (m *WriteData) AppendBody(dst []byte) []byte { return append(dst, m.Stored...) }
func (m *WriteData) DecodeBody(b []byte) error {
	if len(b) < BufferHeaderSize {
		return malformed(TypeWriteData, "body of %d bytes holds no buffer header", len(b))
	}
	m.Stored = b
	return nil
}
func (m *WriteData) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeWriteData, channel)
}

// RegionFinish ends the region started last, with the client's counts.
type RegionFinish struct {
	Region      uint32
	Buffers     uint32 // ≥ 1: a region has at least one buffer
	StoredBytes uint64 // the region's buffers, headers included
}

func (*RegionFinish) Type() Type { return TypeRegionFinish }
func (m *RegionFinish) AppendBody(dst []byte) []byte {
	return le64(le32(le32(dst, m.Region), m.Buffers), m.StoredBytes)
}
func (m *RegionFinish) DecodeBody(b []byte) error {
	d := dec{t: TypeRegionFinish, b: b}
	m.Region = d.u32("region")
	m.Buffers = d.u32("buffers")
	m.StoredBytes = d.u64("stored bytes")
	if d.err == nil && m.Buffers == 0 {
		d.fail("a region without buffers")
	}
	return d.done()
}
func (m *RegionFinish) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeRegionFinish, channel)
}

// WriteTotals are the totals of a MapPartition write that both sides
// compute: regions, buffers, stored bytes (headers included), and the
// CRC32C of the concatenation of every buffer's 24-byte header in order
// (which covers every payload CRC, so it proves the worker holds exactly
// the client's buffers).
type WriteTotals struct {
	Regions     uint32
	Buffers     uint64
	StoredBytes uint64
	HeadersCRC  uint32
}

func (t *WriteTotals) append(dst []byte) []byte {
	return le32(le64(le64(le32(dst, t.Regions), t.Buffers), t.StoredBytes), t.HeadersCRC)
}

func (t *WriteTotals) decode(d *dec) {
	t.Regions = d.u32("regions")
	t.Buffers = d.u64("buffers")
	t.StoredBytes = d.u64("stored bytes")
	t.HeadersCRC = d.u32("headers CRC")
}

// Add counts one stored buffer, given its header bytes and its size.
func (t *WriteTotals) Add(header []byte, size int) {
	t.Buffers++
	t.StoredBytes += uint64(size)
	t.HeadersCRC = UpdateChecksum(t.HeadersCRC, header[:BufferHeaderSize])
}

// WriteFinish asks the worker to commit the partition, with the client's
// totals; the worker checks them against what it received.
type WriteFinish struct {
	WriteTotals
}

func (*WriteFinish) Type() Type                     { return TypeWriteFinish }
func (m *WriteFinish) AppendBody(dst []byte) []byte { return m.append(dst) }
func (m *WriteFinish) DecodeBody(b []byte) error {
	d := dec{t: TypeWriteFinish, b: b}
	m.decode(&d)
	return d.done()
}
func (m *WriteFinish) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeWriteFinish, channel)
}

// WriteCommitted says the partition is durable and committed: the totals
// the worker stored (equal to WRITE_FINISH's), the file's length and its
// footer CRC (as recorded in the worker's commit log).
type WriteCommitted struct {
	WriteTotals
	FileLength uint64
	FooterCRC  uint32
}

func (*WriteCommitted) Type() Type { return TypeWriteCommitted }
func (m *WriteCommitted) AppendBody(dst []byte) []byte {
	return le32(le64(m.append(dst), m.FileLength), m.FooterCRC)
}
func (m *WriteCommitted) DecodeBody(b []byte) error {
	d := dec{t: TypeWriteCommitted, b: b}
	m.decode(&d)
	m.FileLength = d.u64("file length")
	m.FooterCRC = d.u32("footer CRC")
	return d.done()
}
func (m *WriteCommitted) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeWriteCommitted, channel)
}

// ---- ReducePartition push ----

// PushOpen opens a channel that pushes one producer attempt's segments to
// one ReducePartition.
type PushOpen struct {
	Reduce          uint32 // the subpartition
	Map, Attempt    uint32
	Maps            uint32 // M ≥ 1, Map < M
	Codec           Codec
	MaxSegmentBytes uint32 // the largest stored segment the client sends, header included: 33 to SegmentHeaderSize+MaxPayloadSize
	Job, Dataset    []byte
}

func (*PushOpen) Type() Type { return TypePushOpen }
func (m *PushOpen) AppendBody(dst []byte) []byte {
	dst = le32(le32(le32(le32(dst, m.Reduce), m.Map), m.Attempt), m.Maps)
	dst = le32(append(dst, byte(m.Codec), 0), m.MaxSegmentBytes)
	return appendStr8(appendStr8(dst, m.Job), m.Dataset)
}
func (m *PushOpen) DecodeBody(b []byte) error {
	d := dec{t: TypePushOpen, b: b}
	m.Reduce = d.u32("reduce index")
	m.Map = d.u32("map index")
	m.Attempt = d.u32("attempt")
	m.Maps = d.u32("map count")
	m.Codec = Codec(d.u8("codec"))
	d.zero8("flags")
	m.MaxSegmentBytes = d.u32("max segment bytes")
	m.Job = d.id("job id")
	m.Dataset = d.id("dataset id")
	switch {
	case d.err != nil:
	case m.Map >= m.Maps:
		d.fail("map index %d of %d maps", m.Map, m.Maps)
	case m.Codec > CodecLZ4:
		d.fail("unknown codec %d", m.Codec)
	case m.MaxSegmentBytes <= SegmentHeaderSize || m.MaxSegmentBytes > SegmentHeaderSize+MaxPayloadSize:
		d.fail("max segment bytes %d, want %d to %d", m.MaxSegmentBytes, SegmentHeaderSize+1, SegmentHeaderSize+MaxPayloadSize)
	}
	return d.done()
}
func (m *PushOpen) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypePushOpen, channel)
}

// PushOpened accepts a PUSH_OPEN: the first credit, and how many segments
// of this attempt (seqs 0 to Held-1) the worker already holds from an
// earlier channel, so a retrying pusher may start at seq Held.
type PushOpened struct {
	Credit uint32
	Held   uint32
}

func (*PushOpened) Type() Type                     { return TypePushOpened }
func (m *PushOpened) AppendBody(dst []byte) []byte { return le32(le32(dst, m.Credit), m.Held) }
func (m *PushOpened) DecodeBody(b []byte) error {
	d := dec{t: TypePushOpened, b: b}
	m.Credit = d.u32("credit")
	m.Held = d.u32("held segments")
	return d.done()
}
func (m *PushOpened) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypePushOpened, channel)
}

// PushData carries one stored segment.
type PushData struct {
	Stored []byte // one stored segment: its 32-byte header and payload
}

func (*PushData) Type() Type                     { return TypePushData }
func (m *PushData) AppendBody(dst []byte) []byte { return append(dst, m.Stored...) }
func (m *PushData) DecodeBody(b []byte) error {
	if len(b) < SegmentHeaderSize {
		return malformed(TypePushData, "body of %d bytes holds no segment header", len(b))
	}
	m.Stored = b
	return nil
}
func (m *PushData) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypePushData, channel)
}

// PushAck says the worker holds seqs 0 to Held-1 of the channel's attempt
// (in its merge buffer, not yet durable): the pusher may drop them.
type PushAck struct {
	Held uint32
}

func (*PushAck) Type() Type                     { return TypePushAck }
func (m *PushAck) AppendBody(dst []byte) []byte { return le32(dst, m.Held) }
func (m *PushAck) DecodeBody(b []byte) error {
	d := dec{t: TypePushAck, b: b}
	m.Held = d.u32("held segments")
	return d.done()
}
func (m *PushAck) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypePushAck, channel)
}

// PushCommit commits the attempt's segments 0 to Segments-1 in this
// ReducePartition, with their payload bytes (one copy of each).
type PushCommit struct {
	Segments     uint32
	PayloadBytes uint64
}

func (*PushCommit) Type() Type { return TypePushCommit }
func (m *PushCommit) AppendBody(dst []byte) []byte {
	return le64(le32(dst, m.Segments), m.PayloadBytes)
}
func (m *PushCommit) DecodeBody(b []byte) error {
	d := dec{t: TypePushCommit, b: b}
	m.Segments = d.u32("segments")
	m.PayloadBytes = d.u64("payload bytes")
	return d.done()
}
func (m *PushCommit) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypePushCommit, channel)
}

// PushCommitted says the commit is durable and recorded.
type PushCommitted struct {
	Segments     uint32
	PayloadBytes uint64
}

func (*PushCommitted) Type() Type { return TypePushCommitted }
func (m *PushCommitted) AppendBody(dst []byte) []byte {
	return le64(le32(dst, m.Segments), m.PayloadBytes)
}
func (m *PushCommitted) DecodeBody(b []byte) error {
	d := dec{t: TypePushCommitted, b: b}
	m.Segments = d.u32("segments")
	m.PayloadBytes = d.u64("payload bytes")
	return d.done()
}
func (m *PushCommitted) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypePushCommitted, channel)
}

// PushAbort abandons the attempt in this ReducePartition: its segments are
// never served.
type PushAbort struct{}

func (*PushAbort) Type() Type                   { return TypePushAbort }
func (*PushAbort) AppendBody(dst []byte) []byte { return dst }
func (*PushAbort) DecodeBody(b []byte) error {
	d := dec{t: TypePushAbort, b: b}
	return d.done()
}
func (m *PushAbort) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(dst, s, version, TypePushAbort, channel)
}

// PushAborted confirms PUSH_ABORT.
type PushAborted struct{}

func (*PushAborted) Type() Type                   { return TypePushAborted }
func (*PushAborted) AppendBody(dst []byte) []byte { return dst }
func (*PushAborted) DecodeBody(b []byte) error {
	d := dec{t: TypePushAborted, b: b}
	return d.done()
}
func (m *PushAborted) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(dst, s, version, TypePushAborted, channel)
}

// ---- read ----

// ReadOpen opens a channel that reads one partition: a subpartition range
// of a MapPartition (one producer attempt), or a ReducePartition.
type ReadOpen struct {
	Kind PartitionKind
	// Index is the map index (MapPartition) or the reduce index
	// (ReducePartition); Attempt the map attempt (0 for a ReducePartition).
	Index, Attempt uint32
	// SubStart and SubEnd are the subpartitions [SubStart, SubEnd) of a
	// MapPartition; both 0 for a ReducePartition.
	SubStart, SubEnd uint32
	Credit           uint32 // initial read credit in bytes; may be 0
	Job, Dataset     []byte
}

func (*ReadOpen) Type() Type { return TypeReadOpen }
func (m *ReadOpen) AppendBody(dst []byte) []byte {
	dst = append(dst, byte(m.Kind), 0)
	dst = le32(le32(le32(le32(le32(dst, m.Index), m.Attempt), m.SubStart), m.SubEnd), m.Credit)
	return appendStr8(appendStr8(dst, m.Job), m.Dataset)
}
func (m *ReadOpen) DecodeBody(b []byte) error {
	d := dec{t: TypeReadOpen, b: b}
	m.Kind = PartitionKind(d.u8("partition kind"))
	d.zero8("flags")
	m.Index = d.u32("index")
	m.Attempt = d.u32("attempt")
	m.SubStart = d.u32("subpartition start")
	m.SubEnd = d.u32("subpartition end")
	m.Credit = d.u32("credit")
	m.Job = d.id("job id")
	m.Dataset = d.id("dataset id")
	switch {
	case d.err != nil:
	case m.Kind == PartitionMap && m.SubStart >= m.SubEnd:
		d.fail("empty subpartition range [%d, %d)", m.SubStart, m.SubEnd)
	case m.Kind == PartitionReduce && (m.Attempt != 0 || m.SubStart != 0 || m.SubEnd != 0):
		d.fail("ReducePartition read with attempt %d and range [%d, %d): all must be 0", m.Attempt, m.SubStart, m.SubEnd)
	case m.Kind != PartitionMap && m.Kind != PartitionReduce:
		d.fail("unknown partition kind %d", m.Kind)
	}
	return d.done()
}
func (m *ReadOpen) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeReadOpen, channel)
}

// ReadOpened accepts a READ_OPEN.
type ReadOpened struct {
	// TotalBytes is the stored bytes the channel will deliver: exact for
	// a MapPartition, an upper bound for a ReducePartition (duplicate
	// segments are skipped).
	TotalBytes uint64
	// Count is the MapPartition's subpartition count, or the
	// ReducePartition's map count.
	Count uint32
}

func (*ReadOpened) Type() Type                     { return TypeReadOpened }
func (m *ReadOpened) AppendBody(dst []byte) []byte { return le32(le64(dst, m.TotalBytes), m.Count) }
func (m *ReadOpened) DecodeBody(b []byte) error {
	d := dec{t: TypeReadOpened, b: b}
	m.TotalBytes = d.u64("total bytes")
	m.Count = d.u32("count")
	return d.done()
}
func (m *ReadOpened) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeReadOpened, channel)
}

// ReadData carries whole stored buffers (MapPartition) or segments
// (ReducePartition), none when it only announces the backlog. On the hot
// path a server writes AppendReadDataHeader's bytes and then the stored
// bytes from its read buffers (writev).
type ReadData struct {
	ReadDataFields
	Stored []byte
}

func (*ReadData) Type() Type { return TypeReadData }
func (m *ReadData) AppendBody(dst []byte) []byte {
	return append(le32(le64(dst, m.Backlog), m.Next), m.Stored...)
}
func (m *ReadData) DecodeBody(b []byte) error {
	d := dec{t: TypeReadData, b: b}
	m.Backlog = d.u64("backlog")
	m.Next = d.u32("next")
	if d.err != nil {
		return d.err
	}
	m.Stored = b[ReadDataFieldsSize:]
	return nil
}
func (m *ReadData) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeReadData, channel)
}

// ReadEnd ends a read channel after its last READ_DATA, with what was sent.
type ReadEnd struct {
	Items       uint64 // buffers or segments sent
	StoredBytes uint64 // their bytes, headers included
}

func (*ReadEnd) Type() Type                     { return TypeReadEnd }
func (m *ReadEnd) AppendBody(dst []byte) []byte { return le64(le64(dst, m.Items), m.StoredBytes) }
func (m *ReadEnd) DecodeBody(b []byte) error {
	d := dec{t: TypeReadEnd, b: b}
	m.Items = d.u64("items")
	m.StoredBytes = d.u64("stored bytes")
	return d.done()
}
func (m *ReadEnd) AppendFrame(dst []byte, version uint8, channel uint32) []byte {
	dst, s := beginFrame(dst)
	return endFrame(m.AppendBody(dst), s, version, TypeReadEnd, channel)
}
