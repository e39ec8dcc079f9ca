package uring

import "unsafe"

// The kernel ABI, from include/uapi/linux/io_uring.h. Only what this package
// uses is declared.

// Opcodes (enum io_uring_op).
const (
	OpNop         uint8 = 0
	OpFsync       uint8 = 3
	OpReadFixed   uint8 = 4
	OpWriteFixed  uint8 = 5
	OpAsyncCancel uint8 = 14
	OpRead        uint8 = 22
	OpWrite       uint8 = 23

	opLast = OpWrite // the highest opcode Probe checks
)

// Setup flags (io_uring_params.flags).
const (
	setupCQSize       uint32 = 1 << 3
	setupClamp        uint32 = 1 << 4
	setupSubmitAll    uint32 = 1 << 7
	setupCoopTaskrun  uint32 = 1 << 8
	setupSingleIssuer uint32 = 1 << 12
	setupDeferTaskrun uint32 = 1 << 13
)

// Features reported by the kernel (io_uring_params.features).
const (
	FeatSingleMmap uint32 = 1 << 0
	FeatNoDrop     uint32 = 1 << 1
	FeatExtArg     uint32 = 1 << 8
)

// SQE flags (io_uring_sqe.flags).
const (
	SQEFixedFile uint8 = 1 << 0
	SQEIODrain   uint8 = 1 << 1
	SQEIOLink    uint8 = 1 << 2
	SQEAsync     uint8 = 1 << 4
)

// FsyncDatasync makes OpFsync an fdatasync(2).
const FsyncDatasync uint32 = 1 << 0

// io_uring_enter(2) flags.
const (
	enterGetEvents uint32 = 1 << 0
)

// SQ ring flags (the word at sq_off.flags).
const (
	sqCQOverflow uint32 = 1 << 1
	sqTaskrun    uint32 = 1 << 2
)

// io_uring_register(2) opcodes.
const (
	registerBuffers     = 0
	unregisterBuffers   = 1
	registerFiles       = 2
	unregisterFiles     = 3
	registerFilesUpdate = 6
	registerProbe       = 8
)

// mmap offsets of the three regions.
const (
	offSQRing int64 = 0
	offCQRing int64 = 0x8000000
	offSQEs   int64 = 0x10000000
)

// probeOpSupported is io_uring_probe_op.flags' IO_URING_OP_SUPPORTED.
const probeOpSupported uint16 = 1 << 0

// SQE is struct io_uring_sqe (64 bytes), with the unions named after the
// member this package uses.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, …
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   int32
	Addr3       uint64
	_           uint64
}

// CQE is struct io_uring_cqe (16 bytes; rings are never set up with CQE32).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries    uint32
	cqEntries    uint32
	flags        uint32
	sqThreadCPU  uint32
	sqThreadIdle uint32
	features     uint32
	wqFd         uint32
	resv         [3]uint32
	sqOff        sqringOffsets
	cqOff        cqringOffsets
}

type probeHeader struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
}

type probeOp struct {
	op    uint8
	resv  uint8
	flags uint16
	resv2 uint32
}

// Compile-time checks that the Go structs match the kernel's sizes.
const (
	_ = uint(64-unsafe.Sizeof(SQE{})) + uint(unsafe.Sizeof(SQE{})-64)
	_ = uint(16-unsafe.Sizeof(CQE{})) + uint(unsafe.Sizeof(CQE{})-16)
	_ = uint(120-unsafe.Sizeof(params{})) + uint(unsafe.Sizeof(params{})-120)
	_ = uint(16-unsafe.Sizeof(probeHeader{})) + uint(unsafe.Sizeof(probeHeader{})-16)
	_ = uint(8-unsafe.Sizeof(probeOp{})) + uint(unsafe.Sizeof(probeOp{})-8)
)
