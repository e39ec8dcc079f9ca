package layout

import (
	"encoding/binary"
	"encoding/hex"
	"time"
)

// ID is a 16-byte random identity: of a disk, or of a worker.
type ID [IDSize]byte

// IDSize is the size of a disk or worker id.
const IDSize = 16

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros, which names nothing.
func (id ID) IsZero() bool { return id == ID{} }

// DiskIdentity is the content of a disk's IDENTITY file. The worker id is
// written on every disk the worker owns, so a restarted worker keeps its
// identity (and its partitions keep their owner) as long as one disk
// survives. The file's format version is the disk's: a build that does not
// read it does not touch the disk.
type DiskIdentity struct {
	Disk    ID
	Worker  ID
	Created time.Time // stored as Unix nanoseconds, UTC
}

// The disk identity file is one header and nothing else:
//
//	+--------+---------+---------+-----------------+--------+
//	| prefix | disk id | worker  | created         | CRC32C |
//	|        | 16 B    | id 16 B | Unix ns, int64  | uint32 |
//	+--------+---------+---------+-----------------+--------+
//	0        16        32        48                56       60
const (
	diDiskOff    = PrefixSize
	diWorkerOff  = diDiskOff + IDSize
	diCreatedOff = diWorkerOff + IDSize
	diCRCOff     = diCreatedOff + 8
	// DiskIdentitySize is the size of a disk identity file.
	DiskIdentitySize = diCRCOff + crcSize
)

const (
	_ uint = DiskIdentitySize - 60
	_ uint = 60 - DiskIdentitySize
)

// Validate reports whether the format can hold d.
func (d *DiskIdentity) Validate() error {
	if d.Disk.IsZero() || d.Worker.IsZero() {
		return invalidf("disk identity with a zero disk or worker id")
	}
	return nil
}

// AppendDiskIdentity appends the disk identity file for d to dst.
func AppendDiskIdentity(dst []byte, d *DiskIdentity) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = appendPrefix(dst, KindDiskIdentity, DiskIdentitySize)
	dst = append(dst, d.Disk[:]...)
	dst = append(dst, d.Worker[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(d.Created.UnixNano()))
	return binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:])), nil
}

// DecodeDiskIdentity decodes and checks a whole disk identity file.
func DecodeDiskIdentity(b []byte) (DiskIdentity, Version, error) {
	const kind = KindDiskIdentity
	hdr, v, err := readHeader(b, kind)
	if err != nil {
		return DiskIdentity{}, 0, err
	}
	if err := checkHeaderLength(kind, v, len(hdr), DiskIdentitySize); err != nil {
		return DiskIdentity{}, 0, err
	}
	if len(b) != len(hdr) {
		return DiskIdentity{}, 0, corruptf(kind, int64(len(hdr)), int64(len(b)-len(hdr)), "%d bytes after the disk identity", len(b)-len(hdr))
	}
	var d DiskIdentity
	copy(d.Disk[:], hdr[diDiskOff:])
	copy(d.Worker[:], hdr[diWorkerOff:])
	d.Created = time.Unix(0, int64(binary.LittleEndian.Uint64(hdr[diCreatedOff:]))).UTC()
	if err := d.Validate(); err != nil {
		return DiskIdentity{}, 0, corruptf(kind, diDiskOff, 2*int64(IDSize), "%v", err)
	}
	return d, v, nil
}
