package diskio

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/uring"
	"golang.org/x/sys/unix"
)

// backend is one IO under test, built fresh for every case.
type backend struct {
	name   string
	direct bool
	open   func(t *testing.T, depth int) IO
}

func backends(t *testing.T) []backend {
	fresh := func(name string) func(t *testing.T, depth int) IO {
		return func(t *testing.T, depth int) IO {
			if name == BackendURing {
				if err := uring.Probe(); err != nil {
					t.Skipf("io_uring unusable here: %v", err)
				}
			}
			io, err := New(Config{Backend: name, Depth: depth, Dir: t.TempDir()})
			if err != nil {
				t.Fatalf("New(%s): %v", name, err)
			}
			t.Cleanup(func() {
				if err := io.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			return io
		}
	}
	return []backend{
		{"uring", true, fresh(BackendURing)},
		{"pool", true, fresh(BackendPool)},
		{"buffered", false, fresh(BackendBuffered)},
		{"faulty-uring", true, func(t *testing.T, depth int) IO { return NewFaulty(fresh(BackendURing)(t, depth)) }},
	}
}

// conformance is the table every backend passes.
var conformance = []struct {
	name string
	run  func(t *testing.T, b backend)
}{
	{"WriteReadBack", testWriteReadBack},
	{"CreateFile", testCreateFile},
	{"CompleteSubmits", testCompleteSubmits},
	{"FixedBuffers", testFixedBuffers},
	{"Fdatasync", testFdatasync},
	{"HundredsInFlight", testHundredsInFlight},
	{"FullRingWaits", testFullRingWaits},
	{"ShortReadAtEOF", testShortReadAtEOF},
	{"UnalignedRejected", testUnalignedRejected},
	{"ClosedFileRejected", testClosedFileRejected},
	{"CloseWithReadsInFlight", testCloseWithReadsInFlight},
	{"FaultsSurface", testFaultsSurface},
	{"CloseWithIOInFlight", testCloseWithIOInFlight},
	{"ConcurrentSubmitters", testConcurrentSubmitters},
	{"NoAllocationPerOp", testNoAllocationPerOp},
}

func TestConformance(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) { c.run(t, b) })
			}
		})
	}
}

func newMemPool(t testing.TB, n, size int) *mem.Pool {
	t.Helper()
	p, err := mem.New(mem.Config{BufferBytes: size, Buffers: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("pool Close: %v", err)
		}
	})
	return p
}

// newBuffer returns one buffer of size bytes from a pool of its own; it
// goes back when the test ends.
func newBuffer(t testing.TB, size int) *mem.Buf {
	t.Helper()
	b := newMemPool(t, 1, size).TryGet()
	t.Cleanup(b.Release)
	return b
}

func createFile(t testing.TB, io IO, name string) *File {
	t.Helper()
	f, err := io.OpenFile(filepath.Join(t.TempDir(), name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("file Close: %v", err)
		}
	})
	return f
}

func fill(b []byte, seed int) {
	for i := range b {
		b[i] = byte(seed*31 + i*7 + i>>9)
	}
}

func mustDo(t testing.TB, io IO, reqs ...*Request) {
	t.Helper()
	if err := Do(io, reqs...); err != nil {
		t.Fatal(err)
	}
}

func testWriteReadBack(t *testing.T, b backend) {
	io := b.open(t, 8)
	f := createFile(t, io, "rw.data")
	if f.Direct() != b.direct {
		t.Fatalf("file direct = %t, backend direct = %t", f.Direct(), b.direct)
	}
	pool := newMemPool(t, 4, 1<<20)
	for _, size := range []int{4096, 64 << 10, 1 << 20} {
		w, r := pool.TryGet(), pool.TryGet()
		fill(w.Bytes()[:size], size)
		mustDo(t, io, &Request{Op: OpWrite, File: f, Buf: w.Bytes()[:size], Off: int64(size)})
		req := &Request{Op: OpRead, File: f, Buf: r.Bytes()[:size], Off: int64(size)}
		mustDo(t, io, req)
		if req.N != size || !bytes.Equal(r.Bytes()[:size], w.Bytes()[:size]) {
			t.Fatalf("size %d: read %d bytes that differ from the write", size, req.N)
		}
		w.Release()
		r.Release()
	}
}

// tmpfileOpens records the directories an IO opened with O_TMPFILE.
type tmpfileOpens struct {
	IO
	dirs []string
}

func (r *tmpfileOpens) OpenFile(path string, flag int, perm os.FileMode) (*File, error) {
	if flag&unix.O_TMPFILE == unix.O_TMPFILE {
		r.dirs = append(r.dirs, path)
	}
	return r.IO.OpenFile(path, flag, perm)
}

// testCreateFile creates files every way: O_TMPFILE in the file's own
// directory or in another, and O_CREAT when /proc is missing or the link
// fails. Each file is named, holds what was written through it and nothing
// else is left in either directory; creating it again is EEXIST.
func testCreateFile(t *testing.T, b backend) {
	io := &tmpfileOpens{IO: b.open(t, 8)}
	w := newBuffer(t, 64<<10)
	for _, tc := range []struct {
		name   string
		procFD string // "": the real one
		near   bool
		// tmpfile: the creation opens O_TMPFILE in near (or the file's
		// directory); then the link works unless linkFails.
		tmpfile, linkFails bool
	}{
		{name: "tmpfile", tmpfile: true},
		{name: "tmpfile near another directory", near: true, tmpfile: true},
		{name: "no /proc", procFD: filepath.Join(t.TempDir(), "no-proc") + "/", near: true},
		{name: "link fails", procFD: t.TempDir() + "/", near: true, tmpfile: true, linkFails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.procFD != "" {
				defer func(old string) { procFD = old }(procFD)
				procFD = tc.procFD
			}
			io.dirs = nil
			dir, near := t.TempDir(), ""
			want := dir
			if tc.near {
				near = t.TempDir()
				want = near
			}
			path := filepath.Join(dir, "new.data")
			f, err := CreateFile(io, path, near, 0o640)
			if err != nil {
				t.Fatalf("CreateFile: %v", err)
			}
			var wantDirs []string
			if tc.tmpfile {
				wantDirs = []string{want}
			}
			if !slices.Equal(io.dirs, wantDirs) {
				t.Fatalf("O_TMPFILE opened in %q, want %q", io.dirs, wantDirs)
			}
			if f.Name() != path || f.Direct() != b.direct {
				t.Fatalf("file %q direct %t, want %q direct %t", f.Name(), f.Direct(), path, b.direct)
			}
			fill(w.Bytes(), 7)
			mustDo(t, io, &Request{Op: OpWrite, File: f, Buf: w.Bytes(), Off: 4096})
			mustDo(t, io, &Request{Op: OpSync, File: f})
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 4096+len(w.Bytes()) || !bytes.Equal(got[4096:], w.Bytes()) || !bytes.Equal(got[:4096], make([]byte, 4096)) {
				t.Fatalf("the file holds %d bytes, not the write", len(got))
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm()&^0o640 != 0 { // the umask may take more away
				t.Fatalf("mode %v, want at most 0640", st.Mode())
			}
			if _, err := CreateFile(io, path, near, 0o640); !errors.Is(err, os.ErrExist) {
				t.Fatalf("CreateFile of an existing file: %v, want EEXIST", err)
			}
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 {
				t.Fatalf("the directory holds %d entries (%v), want the one file", len(ents), err)
			}
			if near != "" {
				if ents, err := os.ReadDir(near); err != nil || len(ents) != 0 {
					t.Fatalf("the directory near holds %d entries (%v), want none", len(ents), err)
				}
			}
		})
	}
}

func testFixedBuffers(t *testing.T, b backend) {
	io := b.open(t, 8)
	pool := newMemPool(t, 8, 256<<10)
	registered, err := io.RegisterMemory(pool.Memory(), pool.BufferBytes())
	if err != nil {
		t.Fatalf("RegisterMemory: %v", err)
	}
	if registered != io.Info().Registered {
		t.Fatalf("RegisterMemory said %t, Info says %t", registered, io.Info().Registered)
	}
	if b.name == "uring" && !registered {
		t.Fatal("the uring backend did not register the slab (running as root, so RLIMIT_MEMLOCK does not apply)")
	}
	f := createFile(t, io, "fixed.data")
	bufs := make([]*mem.Buf, 8)
	reqs := make([]*Request, 8)
	for i := range bufs {
		bufs[i] = pool.TryGet()
		fill(bufs[i].Bytes(), i)
		reqs[i] = &Request{Op: OpWrite, File: f, Buf: bufs[i].Bytes(), Off: int64(i) * 256 << 10}
	}
	mustDo(t, io, reqs...)
	for i := range reqs {
		want := append([]byte(nil), bufs[i].Bytes()...)
		clear(bufs[i].Bytes())
		// Read a sub-slice in the middle of the registered buffer.
		reqs[i] = &Request{Op: OpRead, File: f, Buf: bufs[i].Bytes()[4096 : 128<<10], Off: int64(i)*256<<10 + 4096}
		mustDo(t, io, reqs[i])
		if !bytes.Equal(bufs[i].Bytes()[4096:128<<10], want[4096:128<<10]) {
			t.Fatalf("buffer %d: fixed read back differs", i)
		}
		bufs[i].Release()
	}
}

func testFdatasync(t *testing.T, b backend) {
	io := b.open(t, 4)
	f := createFile(t, io, "sync.data")
	buf := newBuffer(t, 4096)
	mustDo(t, io, &Request{Op: OpWrite, File: f, Buf: buf.Bytes(), Off: 0})
	sync := &Request{Op: OpSync, File: f}
	mustDo(t, io, sync)
	if sync.N != 0 || sync.Err != nil {
		t.Fatalf("fdatasync: n %d err %v", sync.N, sync.Err)
	}
}

func testHundredsInFlight(t *testing.T, b backend) {
	io := b.open(t, 64)
	f := createFile(t, io, "many.data")
	const n, size = 512, 4096
	pool := newMemPool(t, n, size)
	bufs := make([]*mem.Buf, n)
	reqs := make([]*Request, n)
	for i := range reqs {
		bufs[i] = pool.TryGet()
		fill(bufs[i].Bytes(), i)
		reqs[i] = &Request{Op: OpWrite, File: f, Buf: bufs[i].Bytes(), Off: int64(i * size), Tag: uint64(i)}
	}
	mustDo(t, io, reqs...)
	for i := range reqs {
		reqs[i] = &Request{Op: OpRead, File: f, Buf: bufs[i].Bytes(), Off: int64(i * size), Tag: uint64(i)}
		clear(bufs[i].Bytes())
	}
	done := make(chan *Request, n)
	for _, r := range reqs {
		r.Done = done
	}
	if err := io.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	seen := make([]bool, n)
	for range n {
		r := <-done
		if r.Err != nil || r.N != size {
			t.Fatalf("read %d: n %d err %v", r.Tag, r.N, r.Err)
		}
		if seen[r.Tag] {
			t.Fatalf("request %d completed twice", r.Tag)
		}
		seen[r.Tag] = true
		fill(want, int(r.Tag))
		if !bytes.Equal(r.Buf, want) {
			t.Fatalf("block %d differs", r.Tag)
		}
	}
	for _, buf := range bufs {
		buf.Release()
	}
}

func testFullRingWaits(t *testing.T, b backend) {
	// Depth 1: the ring holds one request, the queue four; Submit of 200
	// must wait for room, never drop.
	io := b.open(t, 1)
	f := createFile(t, io, "full.data")
	buf := newBuffer(t, 4096)
	const n = 200
	done := make(chan *Request, n)
	reqs := make([]*Request, n)
	for i := range reqs {
		reqs[i] = &Request{Op: OpWrite, File: f, Buf: buf.Bytes(), Off: int64(i * 4096), Done: done}
	}
	if err := io.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	for range n {
		if r := <-done; r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if size, err := f.Size(); err != nil || size != n*4096 {
		t.Fatalf("file size %d, %v; want %d", size, err, n*4096)
	}
}

func testShortReadAtEOF(t *testing.T, b backend) {
	io := b.open(t, 4)
	f := createFile(t, io, "eof.data")
	buf := newBuffer(t, 16<<10)
	mustDo(t, io, &Request{Op: OpWrite, File: f, Buf: buf.Bytes()[:8192]})
	for _, c := range []struct {
		off    int64
		len, n int
	}{{0, 16 << 10, 8192}, {4096, 16 << 10, 4096}, {8192, 4096, 0}, {1 << 20, 4096, 0}} {
		r := &Request{Op: OpRead, File: f, Buf: buf.Bytes()[:c.len], Off: c.off}
		mustDo(t, io, r)
		if r.N != c.n {
			t.Errorf("read [%d, +%d) of an 8 KiB file: n = %d, want %d", c.off, c.len, r.N, c.n)
		}
	}
}

func testUnalignedRejected(t *testing.T, b backend) {
	io := b.open(t, 4)
	f := createFile(t, io, "align.data")
	buf := newBuffer(t, 64<<10)
	a := f.Alignment()
	if b.direct && (a.Memory < 512 || a.Offset < 512) {
		t.Fatalf("direct file alignment %+v is implausible", a)
	}
	cases := []struct {
		name string
		buf  []byte
		off  int64
	}{
		{"address", buf.Bytes()[1 : 1+4096], 0},
		{"offset", buf.Bytes()[:4096], 100},
		{"length", buf.Bytes()[:4096+1], 0},
	}
	for _, c := range cases {
		done := make(chan *Request, 1)
		r := &Request{Op: OpWrite, File: f, Buf: c.buf, Off: c.off, Done: done}
		err := io.Submit(r)
		if !b.direct {
			if err != nil {
				t.Errorf("%s: buffered IO refused an unaligned request: %v", c.name, err)
			} else if r := <-done; r.Err != nil {
				t.Errorf("%s: buffered unaligned write failed: %v", c.name, r.Err)
			}
			continue
		}
		var ae *AlignError
		if !errors.Is(err, ErrUnaligned) || !errors.As(err, &ae) {
			t.Errorf("%s misaligned: Submit returned %v, want an AlignError", c.name, err)
			continue
		}
		if len(done) != 0 {
			t.Errorf("%s: a rejected request was completed", c.name)
		}
	}
}

// testClosedFileRejected: a request on a closed File fails in Submit. The
// kernel may already have given its descriptor number to another file,
// which the request would otherwise read or write.
func testClosedFileRejected(t *testing.T, b backend) {
	io := b.open(t, 4)
	f := createFile(t, io, "closed.data")
	buf := newBuffer(t, 4096)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	other := createFile(t, io, "reuses-the-descriptor.data")
	for _, op := range []Op{OpWrite, OpRead, OpSync} {
		done := make(chan *Request, 1)
		r := &Request{Op: op, File: f, Done: done}
		if op != OpSync {
			r.Buf = buf.Bytes()
		}
		if err := io.Submit(r); !errors.Is(err, os.ErrClosed) {
			t.Errorf("%v on a closed file: Submit returned %v, want os.ErrClosed", op, err)
		}
		if len(done) != 0 {
			t.Errorf("%v on a closed file was completed", op)
		}
	}
	if size, err := other.Size(); err != nil || size != 0 {
		t.Fatalf("the file opened after the close has %d bytes (%v), want 0", size, err)
	}
}

// testCloseWithReadsInFlight closes a file right after submitting reads on
// it and opens another at once, which takes the lowest free descriptor
// number: the closed one's, unless the reads still hold it. Every read
// must return the first file's bytes.
func testCloseWithReadsInFlight(t *testing.T, b backend) {
	io := b.open(t, 64)
	dir := t.TempDir()
	const n, size = 256, 4096
	pool := newMemPool(t, n, size)
	bufs := make([]*mem.Buf, n)
	for i := range bufs {
		bufs[i] = pool.TryGet()
		fill(bufs[i].Bytes(), 1)
	}
	defer func() {
		for _, buf := range bufs {
			buf.Release()
		}
	}()
	write := func(name string, seed int) string {
		path := filepath.Join(dir, name)
		data := make([]byte, size)
		fill(data, seed)
		if err := os.WriteFile(path, bytes.Repeat(data, n), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	first, second := write("first", 1), write("second", 2)
	want := make([]byte, size)
	fill(want, 1)
	done := make(chan *Request, n)
	for round := range 20 {
		f, err := io.OpenFile(first, os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		reqs := make([]*Request, n)
		for i := range reqs {
			clear(bufs[i].Bytes())
			reqs[i] = &Request{Op: OpRead, File: f, Buf: bufs[i].Bytes(), Off: int64(i * size), Done: done}
		}
		if err := io.Submit(reqs...); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		other, err := io.OpenFile(second, os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			r := <-done
			if r.Err != nil || r.N != size {
				t.Fatalf("round %d, read at %d: n %d, err %v", round, r.Off, r.N, r.Err)
			}
			if !bytes.Equal(r.Buf, want) {
				t.Fatalf("round %d, read at %d: not the first file's bytes (its descriptor went to another file)", round, r.Off)
			}
		}
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func testFaultsSurface(t *testing.T, b backend) {
	fio, ok := b.open(t, 8).(*Faulty)
	if !ok {
		fio = NewFaulty(b.open(t, 8))
	}
	data := createFile(t, fio, "p.data")
	other := createFile(t, fio, "p.index")
	buf := newBuffer(t, 64<<10)
	write := func(f *File, n int) *Request {
		r := &Request{Op: OpWrite, File: f, Buf: buf.Bytes()[:n]}
		if err := Do(fio, r); err != nil && r.Err == nil {
			t.Fatalf("Do: %v", err)
		}
		return r
	}

	removeEIO := fio.Inject(Rule{Op: OpWrite, Path: "*.data", After: 1, Times: 1, Err: syscall.EIO})
	if r := write(data, 4096); r.Err != nil {
		t.Fatalf("first write (skipped by After) failed: %v", r.Err)
	}
	if r := write(data, 4096); !errors.Is(r.Err, syscall.EIO) {
		t.Fatalf("second write: %v, want EIO", r.Err)
	}
	var oe *OpError
	if r := write(data, 4096); r.Err != nil {
		t.Fatalf("third write (rule exhausted) failed: %v", r.Err)
	}
	removeEIO()

	fio.Inject(Rule{Op: OpWrite, Path: "*.index", Err: syscall.ENOSPC})
	r := write(other, 4096)
	if !errors.Is(r.Err, syscall.ENOSPC) || !errors.As(r.Err, &oe) || oe.Path != other.Name() {
		t.Fatalf("write to index: %v, want an OpError naming %s with ENOSPC", r.Err, other.Name())
	}
	if r := write(data, 4096); r.Err != nil {
		t.Fatalf("write to data file hit the index rule: %v", r.Err)
	}

	fio.Inject(Rule{Op: OpWrite, Path: "p.data", Short: 8192 + 100, Times: 1})
	r = write(data, 64<<10)
	if !errors.Is(r.Err, ErrShortWrite) || r.N >= 64<<10 || len(r.Buf) != 64<<10 {
		t.Fatalf("short write: n %d, len(buf) %d, err %v", r.N, len(r.Buf), r.Err)
	}

	fio.Inject(Rule{Op: OpSync, Delay: 20 * time.Millisecond, Times: 1})
	start := time.Now()
	if err := Do(fio, &Request{Op: OpSync, File: data}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("the delayed fdatasync came back before its delay")
	}
	if hits := fio.Hits(); fmt.Sprint(hits) != "[1 1 1]" {
		t.Fatalf("rule hits %v, want [1 1 1]", hits)
	}
}

// TestFaultyCloseWaitsForDelayed: a request that a Delay rule holds back
// is in flight too; Close returns only once it has completed.
func TestFaultyCloseWaitsForDelayed(t *testing.T) {
	inner, err := New(Config{Backend: BackendBuffered, Depth: 4})
	if err != nil {
		t.Fatal(err)
	}
	fio := NewFaulty(inner)
	f := createFile(t, fio, "delayed.data")
	fio.Inject(Rule{Op: OpSync, Delay: 50 * time.Millisecond})
	done := make(chan *Request, 2)
	if err := fio.Submit(&Request{Op: OpSync, File: f, Done: done}); err != nil {
		t.Fatal(err)
	}
	if err := fio.Close(); err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 {
		t.Fatal("Close returned before the delayed request completed")
	}
	if r := <-done; r.Err != nil {
		t.Fatalf("the delayed fdatasync: %v", r.Err)
	}
	// After Close a Delay rule holds nothing back: the request completes
	// with ErrClosed at once.
	if err := fio.Submit(&Request{Op: OpSync, File: f, Done: done}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; !errors.Is(r.Err, ErrClosed) {
		t.Fatalf("Submit after Close completed with %v, want ErrClosed", r.Err)
	}
}

func testCloseWithIOInFlight(t *testing.T, b backend) {
	io := b.open(t, 8)
	f := createFile(t, io, "close.data")
	const n = 300
	buf := newBuffer(t, 4096)
	done := make(chan *Request, 2*n)
	reqs := make([]*Request, n)
	for i := range reqs {
		reqs[i] = &Request{Op: OpWrite, File: f, Buf: buf.Bytes(), Off: int64(i * 4096), Done: done, Tag: uint64(i)}
	}
	submitted := make(chan error)
	go func() { submitted <- io.Submit(reqs...) }()
	time.Sleep(time.Millisecond)
	if err := io.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-submitted; err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, n)
	for range n {
		r := <-done
		if seen[r.Tag] {
			t.Fatalf("request %d completed twice", r.Tag)
		}
		seen[r.Tag] = true
		if r.Err != nil && !errors.Is(r.Err, ErrClosed) {
			t.Fatalf("request %d: %v", r.Tag, r.Err)
		}
	}
	if len(done) != 0 {
		t.Fatal("more completions than requests")
	}
	late := &Request{Op: OpSync, File: f, Done: done}
	if err := io.Submit(late); err != nil {
		t.Fatal(err)
	}
	if r := <-done; !errors.Is(r.Err, ErrClosed) {
		t.Fatalf("Submit after Close completed with %v, want ErrClosed", r.Err)
	}
}

// testCompleteSubmits: Complete functions that submit the next request (as
// the engine's completions do) on an IO of depth 1 whose queue is full must
// not wait for the queue only the IO drains; every request completes, each
// exactly as often as it was submitted.
func testCompleteSubmits(t *testing.T, b backend) {
	io := b.open(t, 1)
	f := createFile(t, io, "complete.data")
	buf := newBuffer(t, 4096)
	const chains, links = 16, 40
	var mu sync.Mutex
	left := chains * links
	completed := make([]int, chains)
	var failed []error
	allDone := make(chan struct{})
	reqs := make([]*Request, chains)
	for c := range reqs {
		r := &Request{Op: OpWrite, File: f, Buf: buf.Bytes(), Off: int64(c * 4096), Tag: uint64(c)}
		r.Complete = func(r *Request) {
			mu.Lock()
			if r.Err != nil {
				failed = append(failed, r.Err)
			}
			completed[r.Tag]++
			again := completed[r.Tag] < links
			left--
			if left == 0 {
				close(allDone)
			}
			mu.Unlock()
			if again {
				// The same request, submitted from its own completion.
				if err := io.Submit(r); err != nil {
					t.Error(err)
				}
			}
		}
		reqs[c] = r
	}
	// Submitting the chains waits for queue space, which the completions
	// must keep freeing.
	go func() {
		if err := io.Submit(reqs...); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-allDone:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("completions stalled with %d of %d requests left (a Submit from a completion waited)", left, chains*links)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("%d requests failed, first: %v", len(failed), failed[0])
	}
	for c, n := range completed {
		if n != links {
			t.Fatalf("chain %d completed %d times, want %d", c, n, links)
		}
	}
}

func testConcurrentSubmitters(t *testing.T, b backend) {
	io := b.open(t, 16)
	f := createFile(t, io, "conc.data")
	pool := newMemPool(t, 8, 4096)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := pool.TryGet()
			defer buf.Release()
			done := make(chan *Request, 4)
			reqs := make([]*Request, 4)
			for i := range reqs {
				reqs[i] = &Request{Op: OpWrite, File: f, Buf: buf.Bytes(), Done: done}
			}
			for round := range 50 {
				for i, r := range reqs {
					r.Off = int64(((g*50+round)*4 + i) * 4096)
				}
				if err := io.Submit(reqs...); err != nil {
					t.Error(err)
					return
				}
				for range reqs {
					if r := <-done; r.Err != nil {
						t.Error(r.Err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func testNoAllocationPerOp(t *testing.T, b backend) {
	io := b.open(t, 8)
	f := createFile(t, io, "alloc.data")
	pool := newMemPool(t, 2, 4096)
	if _, err := io.RegisterMemory(pool.Memory(), pool.BufferBytes()); err != nil {
		t.Fatal(err)
	}
	wbuf, rbuf := pool.TryGet(), pool.TryGet()
	defer wbuf.Release()
	defer rbuf.Release()
	done := make(chan *Request, 2)
	w := &Request{Op: OpWrite, File: f, Buf: wbuf.Bytes(), Done: done}
	r := &Request{Op: OpRead, File: f, Buf: rbuf.Bytes(), Done: done}
	batch := []*Request{w, r}
	allocs := testing.AllocsPerRun(500, func() {
		if err := io.Submit(batch...); err != nil {
			t.Fatal(err)
		}
		<-done
		<-done
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write+read, want 0", allocs)
	}
}

func TestAutoChoosesURingHere(t *testing.T) {
	if err := uring.Probe(); err != nil {
		t.Skipf("io_uring unusable here, auto falls back: %v", err)
	}
	var logged bytes.Buffer
	io, err := New(Config{Dir: t.TempDir(), Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := io.Close(); err != nil {
			t.Error(err)
		}
	}()
	info := io.Info()
	if info.Backend != BackendURing || !info.Direct {
		t.Fatalf("auto chose %s on a machine where io_uring and O_DIRECT work", info)
	}
	if lines := bytes.Count(logged.Bytes(), []byte("\n")); lines != 1 || !bytes.Contains(logged.Bytes(), []byte("io_uring")) {
		t.Fatalf("auto logged %d lines, want one naming io_uring:\n%s", lines, logged.String())
	}
}

// TestAutoFallsBack makes the probes report what a sandbox or a tmpfs would
// (io_uring blocked by seccomp; O_DIRECT refused, as tmpfs did before Linux
// 6.6) and checks that auto then builds the real fallback, says why in one
// line, and that the explicit backends refuse instead.
func TestAutoFallsBack(t *testing.T) {
	realURing, realDirect := probeURing, probeDirect
	t.Cleanup(func() { probeURing, probeDirect = realURing, realDirect })
	probeURing = func() error {
		return &uring.UnusableError{Op: "io_uring_setup", Errno: syscall.EPERM, Reason: "refused by the sandbox"}
	}
	probeDirect = func(string) (bool, error) { return false, nil }

	var logged bytes.Buffer
	io, err := New(Config{Dir: t.TempDir(), Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	info := io.Info()
	if info.Backend != BackendPool || info.Direct {
		t.Fatalf("auto chose %s; want the buffered pool", info)
	}
	if lines := bytes.Count(logged.Bytes(), []byte("\n")); lines != 1 ||
		!bytes.Contains(logged.Bytes(), []byte("refused by the sandbox")) || !bytes.Contains(logged.Bytes(), []byte("O_DIRECT refused")) {
		t.Fatalf("auto logged %d lines, want one giving both reasons:\n%s", lines, logged.String())
	}
	f := createFile(t, io, "fallback.data")
	mustDo(t, io, &Request{Op: OpWrite, File: f, Buf: []byte("unaligned is fine when buffered")}, &Request{Op: OpSync, File: f})
	if err := io.Close(); err != nil {
		t.Fatal(err)
	}
	for _, backend := range []string{BackendURing, BackendPool} {
		if _, err := New(Config{Backend: backend, Dir: t.TempDir()}); err == nil {
			t.Errorf("explicit %s accepted a filesystem that refuses O_DIRECT", backend)
		}
	}
	probeDirect = realDirect
	if _, err := New(Config{Backend: BackendURing, Dir: t.TempDir()}); !errors.Is(err, uring.ErrUnusable) {
		t.Errorf("explicit uring where io_uring is unusable: %v, want the probe's error", err)
	}
}

func TestUnknownBackend(t *testing.T) {
	if _, err := New(Config{Backend: "spdk"}); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

// TestPoolCloseWhileACompletionSubmits: Close waits for the sends under
// way; a Complete function that Submits meanwhile (its worker's request
// finished while a send waited for room) must neither wait behind Close nor
// keep the waiting send from ending.
func TestPoolCloseWhileACompletionSubmits(t *testing.T) {
	p := newPool(1, false)
	f := createFile(t, p, "close.data")
	buf := newBuffer(t, 4096)
	done := make(chan *Request, 16)
	mk := func() *Request { return &Request{Op: OpWrite, File: f, Buf: buf.Bytes(), Done: done} }
	gate := make(chan struct{})
	inComplete := make(chan struct{})
	var again *Request
	a := mk()
	a.Done = nil
	a.Complete = func(r *Request) {
		close(inComplete)
		<-gate // the worker is slow in its completion
		again = mk()
		if err := p.Submit(again); err != nil {
			t.Error(err)
		}
		done <- r
	}
	if err := p.Submit(a); err != nil {
		t.Fatal(err)
	}
	<-inComplete
	if err := p.Submit(mk()); err != nil { // fills the queue (room for 1)
		t.Fatal(err)
	}
	go p.Submit(mk()) // the queue is full while a completion runs: sent by a goroutine
	time.Sleep(20 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	time.Sleep(20 * time.Millisecond) // Close waits for the send under way
	close(gate)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close and a completion that Submits wait for each other")
	}
	// Every request came back: a, the two queued, and the one the
	// completion submitted (written, or refused after Close).
	for range 4 {
		select {
		case r := <-done:
			if r.Err != nil && !errors.Is(r.Err, ErrClosed) {
				t.Fatal(r.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request never completed")
		}
	}
}
