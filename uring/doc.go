// Package uring is Sluice's minimal binding to Linux io_uring, written on
// golang.org/x/sys/unix and nothing else.
//
// It covers what a storage engine needs and no more: ring setup with
// parameters, the mmap'd submission and completion rings, SQE preparation for
// NOP, READ, WRITE, READ_FIXED, WRITE_FIXED and FSYNC, batched submission of
// many SQEs in one io_uring_enter(2), reaping completions with and without
// waiting, registered buffers and files, and a probe that says why io_uring
// cannot be used on this machine.
//
// # The ring protocol
//
// io_uring_setup(2) returns a file descriptor; three regions are mapped from
// it (one mapping for both rings when the kernel has IORING_FEAT_SINGLE_MMAP):
//
//	 submission queue (SQ)                      completion queue (CQ)
//	 written by us, read by the kernel          written by the kernel, read by us
//
//	  khead        ktail                          khead        ktail
//	    |            |                              |            |
//	    v            v                              v            v
//	+---+---+---+---+---+---+---+---+         +---+---+---+---+---+---+---+---+
//	|   | 3 | 4 | 5 |   |   |   |   | array   |   | c | c | c |   |   |   |   | cqes
//	+---+---+---+---+---+---+---+---+         +---+---+---+---+---+---+---+---+
//	      |   |   |                                 16-byte CQEs: user_data,
//	      v   v   v                                 res, flags
//	+---+---+---+---+---+---+---+---+
//	|   |sqe|sqe|sqe|   |   |   |   | sqes (64-byte entries, own mapping)
//	+---+---+---+---+---+---+---+---+
//
// Submitting: fill the SQE at sqeTail&mask, make array[i&mask] point at it
// (we map the array as the identity once at setup), then publish the new tail
// with a store-release; io_uring_enter(to_submit) makes the kernel consume
// entries up to the tail and advance khead, which we read with a
// load-acquire to know which SQEs are free again. Reaping: load-acquire the
// CQ tail, read the CQEs between our head and that tail, then store-release
// the new head so the kernel may reuse the slots. Go's sync/atomic
// operations are sequentially consistent, which is stronger than the
// acquire/release pairs the kernel expects (see io_uring(7), "Submission
// Queue Polling" and liburing's io_uring_smp_store_release).
//
// # Threads and the Go runtime
//
// A Ring is not safe for concurrent use: one goroutine owns it, prepares
// SQEs, calls Enter and reaps. IORING_SETUP_SINGLE_ISSUER (kernel 6.0) lets
// the kernel skip locking on that assumption, but it binds the ring to the
// OS thread that created it, and a goroutine migrates between threads; so
// the option is requested only through Params.SingleIssuer, and a caller that
// sets it must create and use the ring from a goroutine that called
// runtime.LockOSThread for its whole life. Sluice's engine does exactly that
// (engine/diskio: one owner goroutine per disk, locked to its thread), and
// also asks for IORING_SETUP_COOP_TASKRUN (5.19), which stops the kernel from
// interrupting that thread with an IPI for every completion; task work then
// runs when the owner next enters the kernel, which it does for every batch.
// Flags the running kernel lacks are dropped one by one (EINVAL on setup) and
// Ring.Flags reports what was granted.
//
// Buffers handed to Prep* must stay valid, and not move, until their
// completion is reaped. Memory from mmap (engine/mem's slab) is outside the
// Go heap and satisfies this trivially; Go heap memory does too as long as
// the caller keeps a reference, because the Go collector does not move heap
// objects.
package uring
