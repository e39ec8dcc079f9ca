// Package wire is the codec of Sluice's data-plane protocol, specified
// byte for byte in netsvc/PROTOCOL.md: frame headers, the body of every
// message, the handshake's version negotiation, the protocol's error codes,
// the record framing inside payloads, and (re-exported from layout) the
// stored buffer and segment headers that data frames carry. It does no IO
// beyond FrameReader, which reads from any io.Reader.
//
// Every frame is a 20-byte header and a body:
//
//	+---------+------+-------+----------+---------+--------+----------+----------+------------+
//	| version | type | flags | reserved | channel | body   | body     | header   | body       |
//	| u8      | u8   | u8    | u8       | u32     | length | CRC32C   | CRC32C   |            |
//	+---------+------+-------+----------+---------+--------+----------+----------+------------+
//	0         1      2       3          4         8        12         16         20
//
// Control messages have bodies of at most MaxControlBody bytes covered by
// the body CRC. Data messages (WRITE_DATA, PUSH_DATA, READ_DATA) carry, after
// fixed fields the body CRC covers, stored bytes: whole MapPartition
// buffers or ReducePartition segments exactly as the worker stores them,
// each with its own header and payload CRC32C, checked end to end:
//
//	WRITE_DATA  | header | buffer: 'B' codec flags sub len ulen pcrc hcrc | payload |
//	PUSH_DATA   | header | segment: 'S' codec flags map att seq len ulen pcrc hcrc | payload |
//	READ_DATA   | header | backlog u64 | next u32 | buffer or segment … |
//
// Encoding appends to caller buffers (every message type's AppendFrame,
// PutDataHeader to write a data header into headroom in front of a stored
// buffer, AppendReadDataHeader for a gathered write). Decoding takes
// []byte, aliases it, and allocates nothing unless it fails: DecodeHeader,
// each message's DecodeBody, DecodeReadDataFields, NextStored. Failures are
// *Error values carrying the protocol code to answer with (errors.Is with
// ErrMalformed, ErrTooLarge, ErrBadCRC, ErrUnknownType, ErrVersion, or any
// Code) and whether the connection must close. FrameReader reads one header
// at a time from a connection and lets the caller read each body wherever
// it belongs, which is how a worker receives data into its aligned write
// buffers without a copy.
package wire
