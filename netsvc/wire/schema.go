package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// The schema of every body: the field tables of PROTOCOL.md are generated
// from it (go test ./netsvc/wire -update), the describer walks it, and the
// tests check it against the encoders, so the document, the describer and
// the code cannot drift apart.

type fieldKind uint8

const (
	fU8     fieldKind = iota
	fU16              // little-endian
	fU32              // little-endian
	fU64              // little-endian
	fBytes            // Size fixed bytes
	fStr8             // u8 length (named Sym) then that many bytes
	fStr16            // u16 length (named Sym) then that many bytes
	fCredit           // u32 count N, then N × (u32 channel, u32 bytes)
	fStored           // the rest: stored buffers or segments
)

type fieldFmt uint8

const (
	asNum fieldFmt = iota
	asVersion
	asCode
	asCodec
	asPartitionKind
	asErrorFlags
	asRegionFlags
	asHex
	asText
	asID
)

type field struct {
	name string
	kind fieldKind
	size int    // fBytes
	sym  string // fStr8, fStr16: the length's symbol
	as   fieldFmt
	desc string
}

func u8(name string, as fieldFmt, desc string) field {
	return field{name: name, kind: fU8, as: as, desc: desc}
}
func u16(name string, as fieldFmt, desc string) field {
	return field{name: name, kind: fU16, as: as, desc: desc}
}
func u32(name string, as fieldFmt, desc string) field {
	return field{name: name, kind: fU32, as: as, desc: desc}
}
func u64(name string, desc string) field { return field{name: name, kind: fU64, desc: desc} }
func str8(name, sym string, as fieldFmt, desc string) field {
	return field{name: name, kind: fStr8, sym: sym, as: as, desc: desc}
}
func str16(name, sym string, as fieldFmt, desc string) field {
	return field{name: name, kind: fStr16, sym: sym, as: as, desc: desc}
}

var (
	fJob     = str8("job id", "J", asID, "1–128 bytes, opaque")
	fDataset = str8("dataset id", "D", asID, "1–128 bytes, opaque")
	fCodec   = u8("codec", asCodec, "0 = none, 1 = LZ4: the partition's codec; each stored item uses it or none")
	fFlags0  = u8("flags", asNum, "0: no flags are defined in 1.0 (non-zero is MALFORMED)")
	fTotals  = []field{
		u32("regions", asNum, "regions written"),
		u64("buffers", "buffers written, in all regions"),
		u64("stored bytes", "bytes of those buffers, headers included"),
		u32("headers CRC", asHex, "CRC32C of the concatenation of every buffer's 24-byte header, in order"),
	}
)

var schemas = map[Type][]field{
	TypeHello: {
		{name: "magic", kind: fBytes, size: 8, as: asText, desc: `"SLUICEWP" (anything else: BAD_MAGIC)`},
		u32("version min", asVersion, "lowest version the client speaks: major << 16 | minor"),
		u32("version max", asVersion, "highest version the client speaks; ≥ version min"),
		u32("max frame bytes", asNum, "largest body the client accepts; ≥ 1,048,576"),
		u32("flags", asHex, "capability bits: none in 1.0; sent as 0, ignored on receipt"),
		str8("client id", "C", asText, "0–128 bytes, free-form (host, process), for logs"),
		str16("auth token", "T", asText, "0–4096 bytes, opaque; empty when the client has none"),
	},
	TypeHelloAck: {
		{name: "magic", kind: fBytes, size: 8, as: asText, desc: `"SLUICEWP"`},
		u32("version", asVersion, "the negotiated version"),
		{name: "worker id", kind: fBytes, size: 16, as: asHex, desc: "the worker's stable id (16 random bytes, as on its disks)"},
		u32("max frame bytes", asNum, "largest body the server accepts; ≥ 1,048,576"),
		u32("max channels", asNum, "channels that may be open at once on this connection; ≥ 1"),
		u64("memory bytes", "bytes the server lets this connection hold: write credit outstanding plus read data queued"),
		u32("heartbeat interval", asNum, "milliseconds; each side sends HEARTBEAT after this long without sending; ≥ 1"),
		u32("idle timeout", asNum, "milliseconds; each side closes the connection after this long without receiving; > heartbeat interval"),
		u32("flags", asHex, "capability bits: none in 1.0; sent as 0, ignored on receipt"),
		str8("server name", "S", asText, "0–255 bytes, free-form (version, address), for logs"),
	},
	TypeError: {
		u16("code", asCode, "error code (see Error codes)"),
		u8("flags", asErrorFlags, "bit 0 retryable, bit 1 fatal (the sender closes the connection after this frame); other bits sent 0, ignored"),
		u8("reserved", asNum, "sent 0, ignored"),
		u32("version min", asVersion, "lowest version the sender speaks"),
		u32("version max", asVersion, "highest version the sender speaks"),
		str16("message", "M", asText, "0–1024 bytes of UTF-8 for people"),
	},
	TypeHeartbeat: {},
	TypeCloseConnection: {
		u32("timeout", asNum, "milliseconds the sender waits for channels in flight before it closes anyway; 0 = no bound"),
	},
	TypeCreditBatch: {
		{name: "entries", kind: fCredit, desc: "N = 1–8191 entries; each grants bytes ≥ 1 to channel ≠ 0"},
	},
	TypeCredit: {
		u32("bytes", asNum, "credit granted, in bytes; ≥ 1"),
	},
	TypeCloseChannel: {
		u16("reason", asCode, "0 (OK) for a normal close, else the error code that made the client give up"),
		str16("message", "M", asText, "0–1024 bytes of UTF-8 for people"),
	},
	TypeChannelClosed: {},
	TypeWriteOpen: {
		u32("map index", asNum, "the producer"),
		u32("attempt", asNum, "the producer's attempt"),
		u32("subpartition count", asNum, "R ≥ 1: buffers name subpartitions 0 to R−1"),
		fCodec,
		fFlags0,
		u32("max buffer bytes", asNum, "largest stored buffer the client will send, header included: 25 to 67,108,888"),
		u64("size hint", "expected stored bytes of the partition; 0 = unknown"),
		fJob, fDataset,
	},
	TypeWriteOpened: {
		u32("credit", asNum, "first write credit in bytes; may be 0"),
	},
	TypeRegionStart: {
		u32("region", asNum, "0 for the first region of the channel, then +1"),
		u8("flags", asRegionFlags, "bit 0 broadcast; other bits 0 (else MALFORMED)"),
		u64("record bytes", "uncompressed bytes of the region's records, a sizing hint; 0 = unknown"),
	},
	TypeWriteData: {
		{name: "buffer", kind: fStored, desc: "exactly one stored buffer: its 24-byte header and its payload"},
	},
	TypeRegionFinish: {
		u32("region", asNum, "the region started last"),
		u32("buffers", asNum, "buffers sent in the region; ≥ 1"),
		u64("stored bytes", "bytes of those buffers, headers included"),
	},
	TypeWriteFinish:    fTotals,
	TypeWriteCommitted: append(append([]field{}, fTotals...), u64("file length", "length of the committed MapPartition file"), u32("footer CRC", asHex, "the file's footer CRC, as recorded in the worker's commit log")),
	TypePushOpen: {
		u32("reduce index", asNum, "the ReducePartition (subpartition) pushed to"),
		u32("map index", asNum, "the producer; < map count"),
		u32("attempt", asNum, "the producer's attempt"),
		u32("map count", asNum, "M ≥ 1, the dataset's producers"),
		fCodec,
		fFlags0,
		u32("max segment bytes", asNum, "largest stored segment the client will send, header included: 33 to 67,108,896"),
		fJob, fDataset,
	},
	TypePushOpened: {
		u32("credit", asNum, "first write credit in bytes; may be 0"),
		u32("held segments", asNum, "n: the worker holds this attempt's seqs 0 to n−1 already (from an earlier channel)"),
	},
	TypePushData: {
		{name: "segment", kind: fStored, desc: "exactly one stored segment: its 32-byte header and its payload"},
	},
	TypePushAck: {
		u32("held segments", asNum, "n: the worker holds seqs 0 to n−1 of the attempt (not yet durable)"),
	},
	TypePushCommit: {
		u32("segments", asNum, "n: commit seqs 0 to n−1"),
		u64("payload bytes", "payload bytes of those n segments, one copy each"),
	},
	TypePushCommitted: {
		u32("segments", asNum, "as in PUSH_COMMIT"),
		u64("payload bytes", "as in PUSH_COMMIT"),
	},
	TypePushAbort:   {},
	TypePushAborted: {},
	TypeReadOpen: {
		u8("partition kind", asPartitionKind, "1 = MapPartition, 2 = ReducePartition"),
		fFlags0,
		u32("index", asNum, "map index (MapPartition) or reduce index (ReducePartition)"),
		u32("attempt", asNum, "the map attempt; 0 for a ReducePartition"),
		u32("subpartition start", asNum, "first subpartition read; 0 for a ReducePartition"),
		u32("subpartition end", asNum, "one past the last; > start; 0 for a ReducePartition"),
		u32("credit", asNum, "initial read credit in bytes; may be 0"),
		fJob, fDataset,
	},
	TypeReadOpened: {
		u64("total bytes", "stored bytes the channel will deliver: exact for a MapPartition, an upper bound for a ReducePartition"),
		u32("count", asNum, "the MapPartition's subpartition count, or the ReducePartition's map count"),
	},
	TypeReadData: {
		u64("backlog", "stored bytes still to send on the channel after this frame (upper bound for a ReducePartition)"),
		u32("next", asNum, "size of the next whole buffer or segment to send; 0 = none or not known yet"),
		{name: "stored bytes", kind: fStored, desc: "zero or more whole stored buffers (MapPartition) or segments (ReducePartition), as stored"},
	},
	TypeReadEnd: {
		u64("items", "buffers or segments sent on the channel"),
		u64("stored bytes", "their bytes, headers included"),
	},
}

// fieldsSize returns the fixed size of a schema and its length symbols.
func layoutOf(fs []field) (fixed int, syms []string) {
	for _, f := range fs {
		switch f.kind {
		case fU8:
			fixed++
		case fU16:
			fixed += 2
		case fU32:
			fixed += 4
		case fU64:
			fixed += 8
		case fBytes:
			fixed += f.size
		case fStr8:
			fixed++
			syms = append(syms, f.sym)
		case fStr16:
			fixed += 2
			syms = append(syms, f.sym)
		case fCredit:
			fixed += 4
			syms = append(syms, "8N")
		case fStored:
			syms = append(syms, "stored")
		}
	}
	return fixed, syms
}

func offsetExpr(fixed int, syms []string) string {
	if len(syms) == 0 {
		return strconv.Itoa(fixed)
	}
	s := strings.Join(syms, "+")
	if fixed == 0 {
		return s
	}
	return strconv.Itoa(fixed) + "+" + s
}

// BodyTable returns the Markdown table of t's body, as PROTOCOL.md has it.
func BodyTable(t Type) string {
	fs, ok := schemas[t]
	if !ok {
		return ""
	}
	var b strings.Builder
	if len(fs) == 0 {
		b.WriteString("Empty body (length 0).\n")
		return b.String()
	}
	b.WriteString("| offset | size | field | meaning |\n| ---: | ---: | --- | --- |\n")
	fixed := 0
	var syms []string
	row := func(size, name, desc string) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", offsetExpr(fixed, syms), size, name, strings.ReplaceAll(desc, "|", `\|`))
	}
	for _, f := range fs {
		switch f.kind {
		case fU8:
			row("1", f.name+" `u8`", f.desc)
			fixed++
		case fU16:
			row("2", f.name+" `u16`", f.desc)
			fixed += 2
		case fU32:
			row("4", f.name+" `u32`", f.desc)
			fixed += 4
		case fU64:
			row("8", f.name+" `u64`", f.desc)
			fixed += 8
		case fBytes:
			row(strconv.Itoa(f.size), f.name, f.desc)
			fixed += f.size
		case fStr8:
			row("1", f.name+" length "+f.sym+" `u8`", "")
			fixed++
			row(f.sym, f.name, f.desc)
			syms = append(syms, f.sym)
		case fStr16:
			row("2", f.name+" length "+f.sym+" `u16`", "")
			fixed += 2
			row(f.sym, f.name, f.desc)
			syms = append(syms, f.sym)
		case fCredit:
			row("4", "entry count N `u32`", f.desc)
			fixed += 4
			row("8N", "N × (channel `u32`, bytes `u32`)", "")
			syms = append(syms, "8N")
		case fStored:
			row("rest", f.name, f.desc)
			syms = append(syms, "stored")
		}
	}
	info := typeInfos[t]
	switch {
	case info.Data:
		fmt.Fprintf(&b, "\nBody length = %s; the body CRC covers the first %d bytes.\n", offsetExpr(fixed, syms), fixed)
	case info.Extensible:
		fmt.Fprintf(&b, "\nBody length ≥ %s; bytes after these fields are ignored.\n", offsetExpr(fixed, syms))
	default:
		fmt.Fprintf(&b, "\nBody length = %s exactly.\n", offsetExpr(fixed, syms))
	}
	return b.String()
}
