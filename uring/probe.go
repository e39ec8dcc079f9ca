package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// UnusableError says why io_uring cannot be used here. Callers fall back to
// another IO backend and log Reason.
type UnusableError struct {
	Op     string // the step that failed
	Errno  syscall.Errno
	Reason string
}

func (e *UnusableError) Error() string {
	if e.Errno != 0 {
		return fmt.Sprintf("uring: io_uring unusable: %s: %v: %s", e.Op, e.Errno, e.Reason)
	}
	return fmt.Sprintf("uring: io_uring unusable: %s: %s", e.Op, e.Reason)
}

func (e *UnusableError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// ErrUnusable matches every *UnusableError with errors.Is.
var ErrUnusable = errors.New("uring: io_uring unusable")

// Is makes errors.Is(err, ErrUnusable) true for every UnusableError.
func (e *UnusableError) Is(target error) bool { return target == ErrUnusable }

// requiredOps are the opcodes Sluice's engine issues.
var requiredOps = []uint8{OpNop, OpRead, OpWrite, OpReadFixed, OpWriteFixed, OpFsync}

// Probe checks that io_uring works here: a ring can be set up and mapped, a
// NOP makes the round trip with its user_data, and the kernel implements
// every opcode the engine uses. It returns nil or an *UnusableError naming
// the reason.
func Probe() (err error) {
	r, err := New(Params{Entries: 4})
	if err != nil {
		var ue *UnusableError
		if errors.As(err, &ue) {
			return ue
		}
		return &UnusableError{Op: "setup", Errno: errnoOf(err), Reason: err.Error()}
	}
	defer func() {
		if cerr := r.Close(); cerr != nil && err == nil {
			err = &UnusableError{Op: "close", Errno: errnoOf(cerr), Reason: cerr.Error()}
		}
	}()
	ok, err := r.SupportsOps(requiredOps...)
	if err != nil {
		return &UnusableError{Op: "IORING_REGISTER_PROBE", Errno: errnoOf(err), Reason: "kernel older than 5.6 or probing blocked"}
	}
	if !ok {
		return &UnusableError{Op: "IORING_REGISTER_PROBE", Reason: "kernel lacks one of NOP, READ, WRITE, READ_FIXED, WRITE_FIXED, FSYNC (needs Linux 5.6+)"}
	}
	const probeTag = 0x5eed
	sqe := r.GetSQE()
	sqe.PrepNop(probeTag)
	if _, err := r.SubmitAndWait(1); err != nil {
		return &UnusableError{Op: "io_uring_enter", Errno: errnoOf(err), Reason: "submitting a NOP failed"}
	}
	cqe := r.PeekCQE()
	if cqe == nil || cqe.UserData != probeTag || cqe.Res != 0 {
		return &UnusableError{Op: "NOP round trip", Reason: fmt.Sprintf("unexpected completion %+v", cqe)}
	}
	r.CQAdvance(1)
	return nil
}

func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

// reasonFor explains an io_uring_setup failure in operator terms.
func reasonFor(err error) string {
	switch {
	case errors.Is(err, unix.ENOSYS):
		return "the kernel has no io_uring (built without CONFIG_IO_URING, older than 5.1, or the syscall is filtered to ENOSYS by seccomp)"
	case errors.Is(err, unix.EPERM):
		if v := readSysctl("/proc/sys/kernel/io_uring_disabled"); v == "2" {
			return "disabled by sysctl kernel.io_uring_disabled=2"
		} else if v == "1" {
			return "restricted by sysctl kernel.io_uring_disabled=1 to members of kernel.io_uring_group (and CAP_SYS_ADMIN)"
		}
		return "refused by the sandbox: a seccomp profile (Docker's default blocks io_uring) or a security module"
	case errors.Is(err, unix.ENOMEM):
		return "not enough locked memory for the rings (RLIMIT_MEMLOCK; raise `ulimit -l`)"
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		return "out of file descriptors"
	default:
		return err.Error()
	}
}

func readSysctl(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
