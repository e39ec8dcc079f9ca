package uring

import "unsafe"

// Prep methods fill an SQE from GetSQE. The buffer passed to a read or write
// must stay valid and unmoved until the completion is reaped (package
// comment). A zero-length buffer is allowed and transfers nothing.

// PrepNop prepares a no-op that completes with res 0.
func (s *SQE) PrepNop(userData uint64) {
	s.Opcode = OpNop
	s.Fd = -1
	s.UserData = userData
}

// PrepRead prepares pread(fd, buf, off).
func (s *SQE) PrepRead(fd int32, buf []byte, off uint64, userData uint64) {
	s.prepRW(OpRead, fd, buf, off, userData)
}

// PrepWrite prepares pwrite(fd, buf, off).
func (s *SQE) PrepWrite(fd int32, buf []byte, off uint64, userData uint64) {
	s.prepRW(OpWrite, fd, buf, off, userData)
}

// PrepReadFixed prepares a read into registered buffer bufIndex; buf must lie
// inside that registered buffer.
func (s *SQE) PrepReadFixed(fd int32, buf []byte, off uint64, bufIndex uint16, userData uint64) {
	s.prepRW(OpReadFixed, fd, buf, off, userData)
	s.BufIndex = bufIndex
}

// PrepWriteFixed prepares a write from registered buffer bufIndex; buf must
// lie inside that registered buffer.
func (s *SQE) PrepWriteFixed(fd int32, buf []byte, off uint64, bufIndex uint16, userData uint64) {
	s.prepRW(OpWriteFixed, fd, buf, off, userData)
	s.BufIndex = bufIndex
}

// PrepFsync prepares fsync(fd), or fdatasync(fd) with flags FsyncDatasync.
func (s *SQE) PrepFsync(fd int32, flags uint32, userData uint64) {
	s.Opcode = OpFsync
	s.Fd = fd
	s.OpFlags = flags
	s.UserData = userData
}

// PrepCancel prepares IORING_OP_ASYNC_CANCEL of the request whose user_data
// is target.
func (s *SQE) PrepCancel(target uint64, userData uint64) {
	s.Opcode = OpAsyncCancel
	s.Fd = -1
	s.Addr = target
	s.UserData = userData
}

// UseFixedFile makes the SQE's fd an index into the registered file table.
func (s *SQE) UseFixedFile() { s.Flags |= SQEFixedFile }

func (s *SQE) prepRW(op uint8, fd int32, buf []byte, off uint64, userData uint64) {
	s.Opcode = op
	s.Fd = fd
	s.Off = off
	if len(buf) > 0 {
		s.Addr = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
	}
	s.Len = uint32(len(buf))
	s.UserData = userData
}
