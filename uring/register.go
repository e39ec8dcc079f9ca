package uring

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

func (r *Ring) register(opcode uintptr, arg unsafe.Pointer, nrArgs int) error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), opcode, uintptr(arg), uintptr(nrArgs), 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return errno
		}
	}
}

// RegisterBuffers registers memory regions for READ_FIXED/WRITE_FIXED; the
// index of a region in bufs is the buf_index those opcodes take. The kernel
// pins the pages and charges them to RLIMIT_MEMLOCK unless the process has
// CAP_IPC_LOCK (io_uring_register(2), IORING_REGISTER_BUFFERS); ENOMEM
// then means the limit is too low, and the error says so.
func (r *Ring) RegisterBuffers(bufs [][]byte) error {
	if len(bufs) == 0 || len(bufs) > 1<<16 {
		return fmt.Errorf("uring: RegisterBuffers: %d buffers, want 1..65536", len(bufs))
	}
	iov := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		if len(b) == 0 {
			return fmt.Errorf("uring: RegisterBuffers: buffer %d is empty", i)
		}
		iov[i].Base = unsafe.SliceData(b)
		iov[i].SetLen(len(b))
	}
	if err := r.register(registerBuffers, unsafe.Pointer(&iov[0]), len(iov)); err != nil {
		if errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("uring: register %d buffers: %w (pinned memory is limited by RLIMIT_MEMLOCK; raise `ulimit -l` or grant CAP_IPC_LOCK)", len(bufs), err)
		}
		return fmt.Errorf("uring: register %d buffers: %w", len(bufs), err)
	}
	return nil
}

// UnregisterBuffers drops every registered buffer.
func (r *Ring) UnregisterBuffers() error {
	if err := r.register(unregisterBuffers, nil, 0); err != nil {
		return fmt.Errorf("uring: unregister buffers: %w", err)
	}
	return nil
}

// RegisterFiles registers a file table; -1 entries are empty slots that
// UpdateFiles can fill later (sparse tables, Linux 5.5+).
func (r *Ring) RegisterFiles(fds []int32) error {
	if len(fds) == 0 {
		return errors.New("uring: RegisterFiles: empty table")
	}
	if err := r.register(registerFiles, unsafe.Pointer(&fds[0]), len(fds)); err != nil {
		return fmt.Errorf("uring: register %d files: %w", len(fds), err)
	}
	return nil
}

// filesUpdate is struct io_uring_files_update. The kernel declares fds as
// an __aligned_u64; it is an unsafe.Pointer here so that the Go runtime
// sees it: a table on the caller's stack moves when the stack grows, and
// only pointer words are updated with the move (a uint64 holding the
// address would send the kernel to the abandoned stack). It is an array
// so that the field is 8 bytes on 32-bit platforms too, where the second
// word stays zero (the high half of the little-endian u64).
type filesUpdate struct {
	offset uint32
	resv   uint32
	fds    [8 / unsafe.Sizeof(uintptr(0))]unsafe.Pointer
}

// struct io_uring_files_update is 16 bytes.
const _ = uint(16-unsafe.Sizeof(filesUpdate{})) + uint(unsafe.Sizeof(filesUpdate{})-16)

// UpdateFiles replaces table entries starting at off (-1 empties a slot).
func (r *Ring) UpdateFiles(off uint32, fds []int32) error {
	if len(fds) == 0 {
		return nil
	}
	u := filesUpdate{offset: off}
	u.fds[0] = unsafe.Pointer(&fds[0])
	// IORING_REGISTER_FILES_UPDATE returns the number of entries updated;
	// register only reports the errno.
	if err := r.register(registerFilesUpdate, unsafe.Pointer(&u), len(fds)); err != nil {
		return fmt.Errorf("uring: update files [%d, %d): %w", off, int(off)+len(fds), err)
	}
	return nil
}

// UnregisterFiles drops the registered file table.
func (r *Ring) UnregisterFiles() error {
	if err := r.register(unregisterFiles, nil, 0); err != nil {
		return fmt.Errorf("uring: unregister files: %w", err)
	}
	return nil
}

// SupportsOps reports whether the kernel implements every opcode in ops,
// using IORING_REGISTER_PROBE (Linux 5.6+).
func (r *Ring) SupportsOps(ops ...uint8) (bool, error) {
	const n = int(opLast) + 1
	var buf struct {
		hdr probeHeader
		ops [n]probeOp
	}
	if err := r.register(registerProbe, unsafe.Pointer(&buf), n); err != nil {
		return false, fmt.Errorf("uring: probe opcodes: %w", err)
	}
	for _, op := range ops {
		if op > buf.hdr.lastOp || int(op) >= n || buf.ops[op].flags&probeOpSupported == 0 {
			return false, nil
		}
	}
	return true, nil
}
