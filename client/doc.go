// Package client is the Go API that compute tasks link to shuffle through
// Sluice: map writers, reduce pushers and readers.
//
// This first part is the data encoding, without networking: the MapWriter's
// sort-spill core (Spiller), which packs records into regions of stored
// buffers exactly as the worker stores them (LZ4 per buffer with a raw
// fallback, CRC32C, the record framing of PROTOCOL.md), the Encoder it uses
// (also the ReducePusher's segment encoder), and the Reader's decode core
// (Decoder), which checks the stored bytes received in READ_DATA frames end
// to end, decompresses them and yields records. The transport (connections,
// channels, credit) comes with the worker server.
//
// The client imports netsvc/wire for everything it builds on the wire,
// never layout, engine or scheduler.
package client
