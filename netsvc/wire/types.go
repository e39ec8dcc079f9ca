package wire

import "strconv"

// Type is a frame's message type, the second byte of its header.
type Type uint8

// Message types of protocol 1.0. The values are part of the protocol and
// never change; a value not listed here is an unknown type (UNKNOWN_TYPE).
const (
	// Connection messages: channel 0 only.
	TypeHello           Type = 0x01 // client → server, first frame
	TypeHelloAck        Type = 0x02 // server → client, answer to HELLO
	TypeError           Type = 0x03 // either side, any channel (server → client on channels ≠ 0)
	TypeHeartbeat       Type = 0x04 // either side
	TypeCloseConnection Type = 0x05 // either side: finish in-flight channels, then close
	TypeCreditBatch     Type = 0x06 // either side: credit for many channels

	// Messages of every channel kind.
	TypeCredit        Type = 0x08 // credit for one channel (server → client: write/push; client → server: read)
	TypeCloseChannel  Type = 0x09 // client → server: end the channel
	TypeChannelClosed Type = 0x0A // server → client: answer to CLOSE_CHANNEL

	// MapPartition write channels.
	TypeWriteOpen      Type = 0x10
	TypeWriteOpened    Type = 0x11
	TypeRegionStart    Type = 0x12
	TypeWriteData      Type = 0x13
	TypeRegionFinish   Type = 0x14
	TypeWriteFinish    Type = 0x15
	TypeWriteCommitted Type = 0x16

	// ReducePartition push channels.
	TypePushOpen      Type = 0x20
	TypePushOpened    Type = 0x21
	TypePushData      Type = 0x22
	TypePushAck       Type = 0x23
	TypePushCommit    Type = 0x24
	TypePushCommitted Type = 0x25
	TypePushAbort     Type = 0x26
	TypePushAborted   Type = 0x27

	// Read channels.
	TypeReadOpen   Type = 0x30
	TypeReadOpened Type = 0x31
	TypeReadData   Type = 0x32
	TypeReadEnd    Type = 0x33
)

// Side says who may send a message type.
type Side uint8

const (
	SideClient Side = 1 << iota // the peer that connected (a task)
	SideServer                  // the worker
	SideBoth   = SideClient | SideServer
)

func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideServer:
		return "server"
	case SideBoth:
		return "both"
	}
	return "side(" + strconv.Itoa(int(s)) + ")"
}

// ChannelKind is the kind of a channel, set by the message that opens it.
type ChannelKind uint8

const (
	KindConnection ChannelKind = iota // channel 0
	KindAny                           // any channel, 0 included (ERROR)
	KindChannel                       // any channel but 0, of every kind
	KindWrite                         // MapPartition write
	KindPush                          // ReducePartition push
	KindRead                          // read
)

func (k ChannelKind) String() string {
	switch k {
	case KindConnection:
		return "connection"
	case KindAny:
		return "any channel"
	case KindChannel:
		return "every channel kind"
	case KindWrite:
		return "write"
	case KindPush:
		return "push"
	case KindRead:
		return "read"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// TypeInfo describes a message type.
type TypeInfo struct {
	Name string      // as in PROTOCOL.md, e.g. "WRITE_DATA"
	From Side        // who sends it
	Kind ChannelKind // KindConnection: channel 0 only
	// Data types carry stored bytes (buffers or segments) after Fields
	// bytes of fixed fields; the body CRC covers the fields only, the
	// stored bytes carry their own CRCs. Control types have no stored
	// bytes; the body CRC covers the whole body, at most MaxControlBody
	// bytes.
	Data   bool
	Fields int
	// Extensible types (HELLO, HELLO_ACK, ERROR) are read before or
	// without a negotiated version, so they never change in a later major
	// and a receiver ignores bytes after the fields it knows. Every other
	// body has exactly the length its fields need.
	Extensible bool
	// Opens: the message opens its channel. Terminal: after it the server
	// sends nothing more on the channel and the client may reuse its id.
	Opens, Terminal bool
}

var typeInfos = [256]TypeInfo{
	TypeHello:           {Name: "HELLO", From: SideClient, Kind: KindConnection, Extensible: true},
	TypeHelloAck:        {Name: "HELLO_ACK", From: SideServer, Kind: KindConnection, Extensible: true},
	TypeError:           {Name: "ERROR", From: SideBoth, Kind: KindAny, Extensible: true, Terminal: true},
	TypeHeartbeat:       {Name: "HEARTBEAT", From: SideBoth, Kind: KindConnection},
	TypeCloseConnection: {Name: "CLOSE_CONNECTION", From: SideBoth, Kind: KindConnection},
	TypeCreditBatch:     {Name: "CREDIT_BATCH", From: SideBoth, Kind: KindConnection},

	TypeCredit:        {Name: "CREDIT", From: SideBoth, Kind: KindChannel},
	TypeCloseChannel:  {Name: "CLOSE_CHANNEL", From: SideClient, Kind: KindChannel},
	TypeChannelClosed: {Name: "CHANNEL_CLOSED", From: SideServer, Kind: KindChannel, Terminal: true},

	TypeWriteOpen:      {Name: "WRITE_OPEN", From: SideClient, Kind: KindWrite, Opens: true},
	TypeWriteOpened:    {Name: "WRITE_OPENED", From: SideServer, Kind: KindWrite},
	TypeRegionStart:    {Name: "REGION_START", From: SideClient, Kind: KindWrite},
	TypeWriteData:      {Name: "WRITE_DATA", From: SideClient, Kind: KindWrite, Data: true},
	TypeRegionFinish:   {Name: "REGION_FINISH", From: SideClient, Kind: KindWrite},
	TypeWriteFinish:    {Name: "WRITE_FINISH", From: SideClient, Kind: KindWrite},
	TypeWriteCommitted: {Name: "WRITE_COMMITTED", From: SideServer, Kind: KindWrite, Terminal: true},

	TypePushOpen:      {Name: "PUSH_OPEN", From: SideClient, Kind: KindPush, Opens: true},
	TypePushOpened:    {Name: "PUSH_OPENED", From: SideServer, Kind: KindPush},
	TypePushData:      {Name: "PUSH_DATA", From: SideClient, Kind: KindPush, Data: true},
	TypePushAck:       {Name: "PUSH_ACK", From: SideServer, Kind: KindPush},
	TypePushCommit:    {Name: "PUSH_COMMIT", From: SideClient, Kind: KindPush},
	TypePushCommitted: {Name: "PUSH_COMMITTED", From: SideServer, Kind: KindPush, Terminal: true},
	TypePushAbort:     {Name: "PUSH_ABORT", From: SideClient, Kind: KindPush},
	TypePushAborted:   {Name: "PUSH_ABORTED", From: SideServer, Kind: KindPush, Terminal: true},

	TypeReadOpen:   {Name: "READ_OPEN", From: SideClient, Kind: KindRead, Opens: true},
	TypeReadOpened: {Name: "READ_OPENED", From: SideServer, Kind: KindRead},
	TypeReadData:   {Name: "READ_DATA", From: SideServer, Kind: KindRead, Data: true, Fields: ReadDataFieldsSize},
	TypeReadEnd:    {Name: "READ_END", From: SideServer, Kind: KindRead, Terminal: true},
}

// Info describes t; ok is false for an unknown type.
func (t Type) Info() (info TypeInfo, ok bool) {
	info = typeInfos[t]
	return info, info.Name != ""
}

// Known reports whether t is a message type of this build.
func (t Type) Known() bool { return typeInfos[t].Name != "" }

// IsData reports whether t carries stored bytes.
func (t Type) IsData() bool { return typeInfos[t].Data }

func (t Type) String() string {
	if n := typeInfos[t].Name; n != "" {
		return n
	}
	return "type(0x" + strconv.FormatUint(uint64(t), 16) + ")"
}

// Types returns every known type in ascending order.
func Types() []Type {
	var ts []Type
	for i := range typeInfos {
		if typeInfos[i].Name != "" {
			ts = append(ts, Type(i))
		}
	}
	return ts
}

// PartitionKind names the kind of partition a read channel reads.
type PartitionKind uint8

const (
	PartitionMap    PartitionKind = 1 // a MapPartition: one producer attempt, a range of subpartitions
	PartitionReduce PartitionKind = 2 // a ReducePartition: one subpartition, every committed producer
)

func (k PartitionKind) String() string {
	switch k {
	case PartitionMap:
		return "MapPartition"
	case PartitionReduce:
		return "ReducePartition"
	}
	return "partition(" + strconv.Itoa(int(k)) + ")"
}
