package layout

import (
	"encoding/binary"
	"fmt"
)

// Version is a format version: the major number in the high 16 bits, the minor
// number in the low 16 bits. Every file carries one in its prefix.
//
// A newer major is a breaking change: this build refuses it with ErrVersion. A
// newer minor only appends fields to headers and commit log record bodies,
// which older readers of the same major skip. Anything else (a meaning for a
// value 1.0 requires to be zero: a flag bit, a codec, a record kind) needs a
// new major, because 1.0 readers refuse such values as corrupt.
type Version uint32

const (
	// V1_0 is the first format (FORMAT.md, "Version history"): MapPartition
	// files with region index blocks and a directory, ReducePartition files
	// with an attempt table, the disk identity file and the commit log.
	V1_0 Version = 0x0001_0000
	// V1_1 appends to each ReduceCommitted record the partition's map
	// count and codec, so that recovery can recreate an open partition
	// whose file or header did not reach the disk.
	V1_1 Version = 0x0001_0001

	// Current is the version this build writes.
	Current = V1_1
)

// Major returns the major number.
func (v Version) Major() uint16 { return uint16(v >> 16) }

// Minor returns the minor number.
func (v Version) Minor() uint16 { return uint16(v) }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major(), v.Minor()) }

func makeVersion(major, minor uint16) Version { return Version(major)<<16 | Version(minor) }

// FileKind names one kind of Sluice file. Each kind has its own magic number.
type FileKind uint8

const (
	// KindUnknown is a file whose magic is not a Sluice magic.
	KindUnknown FileKind = iota
	// KindMapPartition is one producer attempt's data for all subpartitions.
	KindMapPartition
	// KindReducePartition is one subpartition's data from all producers.
	KindReducePartition
	// KindDiskIdentity names a disk and the worker that owns it.
	KindDiskIdentity
	// KindCommitLog is the per-disk log of committed and released partitions.
	KindCommitLog
)

func (k FileKind) String() string {
	switch k {
	case KindMapPartition:
		return "MapPartition"
	case KindReducePartition:
		return "ReducePartition"
	case KindDiskIdentity:
		return "DiskIdentity"
	case KindCommitLog:
		return "CommitLog"
	}
	return "unknown file"
}

// MagicSize is the size of every magic number, at the start of every file and
// of the MapPartition and ReducePartition footers.
const MagicSize = 8

// Magic numbers. They are part of the durable format and never change.
const (
	magicMapPartition    = "SLUICEMP"
	magicReducePartition = "SLUICERP"
	magicDiskIdentity    = "SLUICEID"
	magicCommitLog       = "SLUICECL"
	magicMapFooter       = "SLUICEMF"
	magicReduceFooter    = "SLUICERF"
)

func (k FileKind) magic() string {
	switch k {
	case KindMapPartition:
		return magicMapPartition
	case KindReducePartition:
		return magicReducePartition
	case KindDiskIdentity:
		return magicDiskIdentity
	case KindCommitLog:
		return magicCommitLog
	}
	return ""
}

// DetectKind returns the kind of file whose first bytes are b, or KindUnknown
// when b does not start with a Sluice magic (or holds fewer than MagicSize
// bytes).
func DetectKind(b []byte) FileKind {
	if len(b) < MagicSize {
		return KindUnknown
	}
	switch string(b[:MagicSize]) {
	case magicMapPartition:
		return KindMapPartition
	case magicReducePartition:
		return KindReducePartition
	case magicDiskIdentity:
		return KindDiskIdentity
	case magicCommitLog:
		return KindCommitLog
	}
	return KindUnknown
}

// The file prefix: the first PrefixSize bytes of every file, in every version.
// Together with the rule that a header's last four bytes are the CRC32C of the
// rest of the header, this is the part of the format that never changes, so
// that any build can tell a newer major from a corrupt file.
//
//	+----------+---------+---------+--------------+
//	| magic    | major   | minor   | headerLength |
//	| 8 bytes  | uint16  | uint16  | uint32       |
//	+----------+---------+---------+--------------+
const (
	prefixMagicOff     = 0
	prefixMajorOff     = prefixMagicOff + MagicSize
	prefixMinorOff     = prefixMajorOff + 2
	prefixHeaderLenOff = prefixMinorOff + 2
	// PrefixSize is the size of the prefix shared by every file kind.
	PrefixSize = prefixHeaderLenOff + 4

	crcSize = 4

	// MaxHeaderSize bounds headerLength in every version, so a reader knows
	// how much to read before it can check the header CRC.
	MaxHeaderSize = 64 << 10
	minHeaderSize = PrefixSize + crcSize
)

func appendPrefix(dst []byte, kind FileKind, headerLen int) []byte {
	dst = append(dst, kind.magic()...)
	dst = binary.LittleEndian.AppendUint16(dst, Current.Major())
	dst = binary.LittleEndian.AppendUint16(dst, Current.Minor())
	return binary.LittleEndian.AppendUint32(dst, uint32(headerLen))
}

// HeaderLength returns the length of the header of the file that starts with
// prefix (at least PrefixSize bytes), so that a reader through io.ReaderAt
// knows how much to read. It checks the magic and the length's range only.
func HeaderLength(prefix []byte) (FileKind, int, error) {
	if len(prefix) < PrefixSize {
		return KindUnknown, 0, truncatedAt(KindUnknown, 0, int64(len(prefix)), PrefixSize, "file prefix")
	}
	kind := DetectKind(prefix)
	if kind == KindUnknown {
		return kind, 0, &CorruptError{File: kind, Offset: 0, Length: MagicSize,
			What: fmt.Sprintf("magic %q is not a Sluice magic", prefix[:MagicSize])}
	}
	n := binary.LittleEndian.Uint32(prefix[prefixHeaderLenOff:])
	if n < minHeaderSize || n > MaxHeaderSize {
		return kind, 0, &CorruptError{File: kind, Offset: prefixHeaderLenOff, Length: 4,
			What: fmt.Sprintf("header length %d outside [%d, %d]", n, minHeaderSize, MaxHeaderSize)}
	}
	return kind, int(n), nil
}

// readHeader checks the prefix and the header CRC of a file of the wanted
// kind that starts with b, and refuses a newer major. It returns the header
// (prefix and CRC included) and the version that wrote it. The caller parses
// the kind-specific fields between the prefix and the CRC.
func readHeader(b []byte, want FileKind) ([]byte, Version, error) {
	kind, n, err := HeaderLength(b)
	if err != nil {
		return nil, 0, err
	}
	if kind != want {
		return nil, 0, &CorruptError{File: want, Offset: 0, Length: MagicSize,
			What: fmt.Sprintf("magic %q: this is a %v file, not a %v file", b[:MagicSize], kind, want)}
	}
	if len(b) < n {
		return nil, 0, truncatedAt(want, 0, int64(len(b)), int64(n), "file header")
	}
	hdr := b[:n]
	if err := checkCRC(want, 0, hdr[:n-crcSize], hdr[n-crcSize:], "file header CRC"); err != nil {
		return nil, 0, err
	}
	v := makeVersion(binary.LittleEndian.Uint16(hdr[prefixMajorOff:]), binary.LittleEndian.Uint16(hdr[prefixMinorOff:]))
	if v.Major() > Current.Major() {
		return nil, 0, &VersionError{File: want, Found: v}
	}
	if v.Major() < Current.Major() {
		// Major 0 was never written: a header with a valid CRC and major 0
		// was made by something other than Sluice.
		return nil, 0, &CorruptError{File: want, Offset: prefixMajorOff, Length: 2,
			What: fmt.Sprintf("format major %d was never written by Sluice", v.Major())}
	}
	return hdr, v, nil
}

// headerCRC returns the CRC32C that ends the file header hdr (or a buffer
// that ends with one), which the footers repeat.
func headerCRC(hdr []byte) uint32 { return binary.LittleEndian.Uint32(hdr[len(hdr)-crcSize:]) }

// checkHeaderLength checks that a header of version v holds the fields of
// this build's minor: exactly so for our minor or an older one (which this
// build writes too), at least so for a newer minor, which may add fields.
func checkHeaderLength(kind FileKind, v Version, n, fixed int) error {
	if n < fixed || (v.Minor() <= Current.Minor() && n != fixed) {
		return &CorruptError{File: kind, Offset: prefixHeaderLenOff, Length: 4,
			What:     fmt.Sprintf("header length %d, fields need %d", n, fixed),
			Expected: uint64(fixed), Actual: uint64(n), HasValues: true}
	}
	return nil
}
