package uring

import (
	"bytes"
	"errors"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newRing skips the test where io_uring is unusable, naming the reason.
func newRing(t testing.TB, p Params) *Ring {
	t.Helper()
	if err := Probe(); err != nil {
		t.Skipf("io_uring unusable here: %v", err)
	}
	r, err := New(p)
	if err != nil {
		t.Fatalf("New(%+v): %v", p, err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// alignedBuf returns n bytes of page-aligned memory outside the Go heap.
func alignedBuf(t testing.TB, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Munmap(b); err != nil {
			t.Errorf("munmap: %v", err)
		}
	})
	return b
}

// openDirect opens a fresh file in a temporary directory with O_DIRECT,
// skipping when the filesystem refuses it.
func openDirect(t testing.TB) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("%s refuses O_DIRECT", filepath.Dir(path))
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Close(fd); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return fd
}

func reapOne(t testing.TB, r *Ring) CQE {
	t.Helper()
	cqe, err := r.WaitCQE()
	if err != nil {
		t.Fatalf("WaitCQE: %v", err)
	}
	c := *cqe
	r.CQAdvance(1)
	return c
}

func TestProbe(t *testing.T) {
	err := Probe()
	if err == nil {
		return
	}
	var ue *UnusableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnusable) || ue.Reason == "" {
		t.Fatalf("Probe error %v is not an UnusableError with a reason", err)
	}
	t.Skipf("io_uring unusable here: %v", err)
}

func TestNopUserDataRoundTrip(t *testing.T) {
	r := newRing(t, Params{Entries: 8})
	tags := []uint64{0, 1, 0xdeadbeefcafef00d, ^uint64(0)}
	for _, tag := range tags {
		r.GetSQE().PrepNop(tag)
	}
	if n, err := r.SubmitAndWait(uint32(len(tags))); err != nil || n != len(tags) {
		t.Fatalf("SubmitAndWait = %d, %v; want %d", n, err, len(tags))
	}
	seen := map[uint64]bool{}
	r.Completions(func(c *CQE) {
		if c.Res != 0 {
			t.Errorf("NOP %x res %d", c.UserData, c.Res)
		}
		seen[c.UserData] = true
	})
	for _, tag := range tags {
		if !seen[tag] {
			t.Errorf("user_data %#x did not come back", tag)
		}
	}
}

func TestWriteReadFsyncDirect(t *testing.T) {
	r := newRing(t, Params{Entries: 16})
	fd := openDirect(t)
	const block = 64 << 10
	wbuf := alignedBuf(t, 4*block)
	for i := range wbuf {
		wbuf[i] = byte(i*7 + i>>12)
	}
	// Four writes in one batch, then one fdatasync.
	for i := 0; i < 4; i++ {
		r.GetSQE().PrepWrite(int32(fd), wbuf[i*block:(i+1)*block], uint64(i*block), uint64(i))
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		c := reapOne(t, r)
		if c.Res != block {
			t.Fatalf("write %d: res %d", c.UserData, c.Res)
		}
	}
	r.GetSQE().PrepFsync(int32(fd), FsyncDatasync, 99)
	if c := reapOne(t, r); c.UserData != 99 || c.Res != 0 {
		t.Fatalf("fdatasync completion %+v", c)
	}

	rbuf := alignedBuf(t, 4*block)
	r.GetSQE().PrepRead(int32(fd), rbuf, 0, 7)
	if c := reapOne(t, r); c.Res != 4*block {
		t.Fatalf("read res %d", c.Res)
	}
	if !bytes.Equal(rbuf, wbuf) {
		t.Fatal("read back differs from what was written")
	}
	// A read past EOF is short: the kernel reports the bytes it had.
	r.GetSQE().PrepRead(int32(fd), rbuf[:2*block], 3*block, 8)
	if c := reapOne(t, r); c.Res != block {
		t.Fatalf("read across EOF: res %d, want %d", c.Res, block)
	}
	// An unaligned O_DIRECT read fails in the kernel with EINVAL.
	r.GetSQE().PrepRead(int32(fd), rbuf[1:4097], 0, 9)
	if c := reapOne(t, r); c.Res != -int32(unix.EINVAL) {
		t.Fatalf("unaligned direct read: res %d, want -EINVAL", c.Res)
	}
}

func TestFixedBuffersAndFiles(t *testing.T) {
	r := newRing(t, Params{Entries: 8})
	fd := openDirect(t)
	mem := alignedBuf(t, 2<<20)
	halves := [][]byte{mem[:1<<20], mem[1<<20:]}
	if err := r.RegisterBuffers(halves); err != nil {
		t.Fatalf("RegisterBuffers: %v", err)
	}
	if err := r.RegisterFiles([]int32{-1, -1, -1}); err != nil {
		t.Fatalf("RegisterFiles: %v", err)
	}
	if err := r.UpdateFiles(2, []int32{int32(fd)}); err != nil {
		t.Fatalf("UpdateFiles: %v", err)
	}
	copy(halves[0], bytes.Repeat([]byte("sluice!!"), 1<<17))
	// Write from buffer 0 at an offset inside it, through fixed file slot 2.
	sqe := r.GetSQE()
	sqe.PrepWriteFixed(2, halves[0][4096:8192], 0, 0, 1)
	sqe.UseFixedFile()
	if c := reapOne(t, r); c.Res != 4096 {
		t.Fatalf("WRITE_FIXED res %d", c.Res)
	}
	sqe = r.GetSQE()
	sqe.PrepReadFixed(2, halves[1][:4096], 0, 1, 2)
	sqe.UseFixedFile()
	if c := reapOne(t, r); c.Res != 4096 {
		t.Fatalf("READ_FIXED res %d", c.Res)
	}
	if !bytes.Equal(halves[1][:4096], halves[0][4096:8192]) {
		t.Fatal("fixed read back differs")
	}
	// A fixed read naming a buffer that does not contain the address fails.
	r.GetSQE().PrepReadFixed(int32(fd), halves[1][:4096], 0, 0, 3)
	if c := reapOne(t, r); c.Res != -int32(unix.EFAULT) {
		t.Fatalf("READ_FIXED outside its buffer: res %d, want -EFAULT", c.Res)
	}
	if err := r.UnregisterFiles(); err != nil {
		t.Fatal(err)
	}
	if err := r.UnregisterBuffers(); err != nil {
		t.Fatal(err)
	}
	// After unregistering, READ_FIXED has no buffer table.
	r.GetSQE().PrepReadFixed(int32(fd), halves[1][:4096], 0, 1, 4)
	if c := reapOne(t, r); c.Res >= 0 {
		t.Fatalf("READ_FIXED after unregister succeeded: res %d", c.Res)
	}
}

func TestFullSQAndBatch(t *testing.T) {
	r := newRing(t, Params{Entries: 8, CQEntries: 64})
	if r.SQEntries() != 8 || r.CQEntries() != 64 {
		t.Fatalf("ring sizes %d/%d", r.SQEntries(), r.CQEntries())
	}
	for i := 0; i < 8; i++ {
		sqe := r.GetSQE()
		if sqe == nil {
			t.Fatalf("SQE %d: ring full too early", i)
		}
		sqe.PrepNop(uint64(i))
	}
	if r.GetSQE() != nil || r.SQSpace() != 0 {
		t.Fatal("GetSQE on a full SQ must return nil")
	}
	if r.Pending() != 8 {
		t.Fatalf("Pending = %d", r.Pending())
	}
	if n, err := r.Submit(); err != nil || n != 8 {
		t.Fatalf("Submit = %d, %v", n, err)
	}
	if r.SQSpace() != 8 {
		t.Fatalf("SQSpace after submit = %d", r.SQSpace())
	}
	// Many batches before reaping: completions accumulate up to the CQ size.
	for b := 0; b < 7; b++ {
		for i := 0; i < 8; i++ {
			r.GetSQE().PrepNop(uint64(8 + b*8 + i))
		}
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.SubmitAndWait(64); err != nil {
		t.Fatal(err)
	}
	if got := r.Ready(); got != 64 {
		t.Fatalf("Ready = %d, want 64", got)
	}
	next := uint64(0)
	r.Completions(func(c *CQE) {
		if c.UserData != next {
			t.Errorf("completion %d has user_data %d", next, c.UserData)
		}
		next++
	})
	if r.PeekCQE() != nil {
		t.Fatal("CQ not empty after reaping everything")
	}
}

func TestSingleIssuerOnLockedThread(t *testing.T) {
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		r, err := New(Params{Entries: 4, SingleIssuer: true, CoopTaskrun: true, DeferTaskrun: true})
		if err != nil {
			done <- err
			return
		}
		r.GetSQE().PrepNop(5)
		_, err = r.SubmitAndWait(1)
		if err == nil {
			if c := r.PeekCQE(); c == nil || c.UserData != 5 {
				err = errors.New("NOP did not complete")
			}
		}
		done <- errors.Join(err, r.Close())
	}()
	if err := <-done; err != nil {
		if errors.Is(err, ErrUnusable) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
}

func TestNoAllocationPerOp(t *testing.T) {
	r := newRing(t, Params{Entries: 8})
	fd := openDirect(t)
	buf := alignedBuf(t, 4096)
	allocs := testing.AllocsPerRun(200, func() {
		r.GetSQE().PrepWrite(int32(fd), buf, 0, 1)
		r.GetSQE().PrepRead(int32(fd), buf, 0, 2)
		if _, err := r.SubmitAndWait(2); err != nil {
			t.Fatal(err)
		}
		r.Completions(func(*CQE) {})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write+read round trip, want 0", allocs)
	}
}

func TestSizes(t *testing.T) {
	if unsafe.Sizeof(SQE{}) != 64 || unsafe.Sizeof(CQE{}) != 16 {
		t.Fatal("ABI struct sizes")
	}
	if unsafe.Offsetof(SQE{}.UserData) != 32 || unsafe.Offsetof(SQE{}.BufIndex) != 40 || unsafe.Offsetof(SQE{}.Addr3) != 48 {
		t.Fatal("SQE field offsets differ from struct io_uring_sqe")
	}
	if unsafe.Offsetof(params{}.sqOff) != 40 || unsafe.Offsetof(params{}.cqOff) != 80 {
		t.Fatal("io_uring_params offsets")
	}
}

func BenchmarkNopRoundTrip(b *testing.B) {
	r := newRing(b, Params{Entries: 64})
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < 32; i++ {
			r.GetSQE().PrepNop(uint64(i))
		}
		if _, err := r.SubmitAndWait(32); err != nil {
			b.Fatal(err)
		}
		r.Completions(func(*CQE) {})
	}
}
