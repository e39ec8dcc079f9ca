package layout

import (
	"encoding/base32"
	"fmt"
	"strconv"
)

// MaxIDSize bounds a job id and a dataset id. Both are opaque byte strings of
// 1 to MaxIDSize bytes (a Flink JobID is 16 bytes, a Spark application id a
// short string); their lengths are stored in one byte.
const MaxIDSize = 128

// Codec says how a payload is encoded. The values are part of the durable
// format and never change.
type Codec uint8

const (
	// CodecNone: the payload is the data itself.
	CodecNone Codec = 0
	// CodecLZ4: the payload is one LZ4 block (no frame) that decodes to
	// UncompressedLength bytes.
	CodecLZ4 Codec = 1

	codecMax = CodecLZ4
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecLZ4:
		return "lz4"
	}
	return "codec(" + strconv.Itoa(int(c)) + ")"
}

func (c Codec) valid() bool { return c <= codecMax }

// AllSubpartitions is the subpartition of the buffers of a broadcast region:
// their data is stored once and belongs to every subpartition. Subpartition
// counts are therefore at most AllSubpartitions.
const AllSubpartitions = ^uint32(0)

// MaxSubpartitions bounds the subpartition count of a MapPartition.
const MaxSubpartitions = AllSubpartitions

func checkIDs(job, dataset []byte) error {
	if len(job) == 0 || len(job) > MaxIDSize {
		return invalidf("job id is %d bytes, want 1 to %d", len(job), MaxIDSize)
	}
	if len(dataset) == 0 || len(dataset) > MaxIDSize {
		return invalidf("dataset id is %d bytes, want 1 to %d", len(dataset), MaxIDSize)
	}
	return nil
}

// Disk layout. A worker's data directory holds (FORMAT.md, "Files on a disk"):
//
//	IDENTITY                                   disk identity
//	COMMITLOG                                  commit log
//	data/<job>/<dataset>/map-<map>-<attempt>   MapPartition files
//	data/<job>/<dataset>/reduce-<reduce>       ReducePartition files
//	data/.inodes-<hex>/                        empty; where new inodes go
//
// <job> and <dataset> are the ids in lowercase base32hex without padding,
// which is reversible, safe in any file name, at most 205 characters for 128
// bytes, and sorts like the bytes it encodes. Numbers are decimal. Paths are
// derived from identities, so the commit log never stores a file name.
const (
	// DiskIdentityFile is the name of the disk identity file.
	DiskIdentityFile = "IDENTITY"
	// CommitLogFile is the name of the commit log.
	CommitLogFile = "COMMITLOG"
	// DataDir is the directory holding the partition files.
	DataDir = "data"
	// InodeDirPrefix starts the names of the empty directories in DataDir
	// whose block groups new files get their inodes from (FORMAT.md, "Files
	// on a disk"); no id encodes to it.
	InodeDirPrefix = ".inodes-"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// EncodeID returns the file-name form of a job or dataset id.
func EncodeID(id []byte) string { return idEncoding.EncodeToString(id) }

// DecodeID reverses EncodeID.
func DecodeID(name string) ([]byte, error) {
	id, err := idEncoding.DecodeString(name)
	if err != nil {
		return nil, fmt.Errorf("%w: id %q: %w", ErrInvalid, name, err)
	}
	if len(id) == 0 || len(id) > MaxIDSize || EncodeID(id) != name {
		return nil, invalidf("id %q is not a canonical encoding of 1 to %d bytes", name, MaxIDSize)
	}
	return id, nil
}

// JobDir returns the directory, relative to a disk's root, that holds every
// partition file of one job.
func JobDir(job []byte) string { return DataDir + "/" + EncodeID(job) }

// DatasetDir returns the directory, relative to a disk's root, that holds
// every partition file of one dataset.
func DatasetDir(job, dataset []byte) string { return JobDir(job) + "/" + EncodeID(dataset) }

// MapPartitionPath returns the path, relative to a disk's root, of the
// MapPartition file of one producer attempt.
func MapPartitionPath(job, dataset []byte, mapIndex, attempt uint32) string {
	return DatasetDir(job, dataset) + "/map-" + strconv.FormatUint(uint64(mapIndex), 10) +
		"-" + strconv.FormatUint(uint64(attempt), 10)
}

// ReducePartitionPath returns the path, relative to a disk's root, of the
// ReducePartition file of one subpartition.
func ReducePartitionPath(job, dataset []byte, reduceIndex uint32) string {
	return DatasetDir(job, dataset) + "/reduce-" + strconv.FormatUint(uint64(reduceIndex), 10)
}
