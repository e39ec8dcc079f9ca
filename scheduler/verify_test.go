package scheduler

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sluice-shuffle/sluice/layout"
)

// feed runs v over data split into chunks at random points, as one extent.
func feed(v *BufferVerifier, data []byte, rng *rand.Rand) error {
	for off := 0; off < len(data); {
		n := min(1+rng.IntN(100), len(data)-off)
		if rng.IntN(4) == 0 {
			n = min(1+rng.IntN(5000), len(data)-off)
		}
		c := Chunk{Data: data[off : off+n], Extent: 0, Offset: int64(off), Last: off+n == len(data)}
		if err := v.Verify(c); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func TestBufferVerifier(t *testing.T) {
	var extent []byte
	for sub := uint32(2); sub < 5; sub++ {
		for k := range 3 {
			p := bytes.Repeat([]byte{byte(sub), byte(k)}, int(sub)*300+k)
			extent = append(extent, storedBuffer(sub, p)...)
		}
	}
	extent = append(extent, storedBuffer(layout.AllSubpartitions, []byte("broadcast"))...)
	extent = append(extent, storedBuffer(3, nil)...)
	exts := []Extent{{Offset: 1000, Length: int64(len(extent))}}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		if err := feed(NewBufferVerifier(exts, 2, 5), extent, rng); err != nil {
			t.Fatalf("good extent: %v", err)
		}
	}
	corrupt := func(name string, mutate func([]byte) []byte, v *BufferVerifier, want string) {
		t.Helper()
		b := mutate(bytes.Clone(extent))
		err := feed(v, b, rng)
		if !errors.Is(err, layout.ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a corruption error about %q", name, err, want)
		}
		var ce *layout.CorruptError
		if errors.As(err, &ce) && (ce.Offset < 1000 || ce.Offset >= 1000+int64(len(b))) {
			t.Errorf("%s: error at offset %d, outside the extent at file offset 1000", name, ce.Offset)
		}
	}
	corrupt("payload bit", func(b []byte) []byte { b[layout.BufferHeaderSize+100] ^= 4; return b }, NewBufferVerifier(exts, 2, 5), "payload CRC")
	corrupt("header bit", func(b []byte) []byte { b[9] ^= 1; return b }, NewBufferVerifier(exts, 2, 5), "header CRC")
	corrupt("cut short", func(b []byte) []byte { return b[:len(b)-layout.BufferHeaderSize-1] }, NewBufferVerifier(exts, 2, 5), "ends inside a buffer")
	corrupt("other subpartitions", func(b []byte) []byte { return b }, NewBufferVerifier(exts, 3, 5), "subpartition 2")
}

func TestIndexCache(t *testing.T) {
	ic, err := NewIndexCache(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<10)
	src := &countingReaderAt{r: bytes.NewReader(data)}
	k1, k2 := FileKey{Dev: 1, Ino: 2, Ctime: 3}, FileKey{Dev: 1, Ino: 2, Ctime: 4}
	r1, r2 := ic.ReaderAt(k1, src), ic.ReaderAt(k2, src)
	read := func(r io.ReaderAt, off int64, n int) []byte {
		t.Helper()
		p := make([]byte, n)
		if _, err := r.ReadAt(p, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[off:off+int64(n)]) {
			t.Fatalf("read [%d, +%d) returned other bytes", off, n)
		}
		return p
	}
	read(r1, 100, 4000)
	read(r1, 100, 4000)
	read(r1, 100, 4000)
	if st := ic.Stats(); st.Hits != 2 || st.Misses != 1 || src.n != 1 {
		t.Errorf("after three reads of one block: %+v, %d reads below", st, src.n)
	}
	read(r2, 100, 4000) // another file (same inode, another change time)
	read(r1, 101, 4000) // another range
	read(r1, 0, 8192)   // larger than an index block: not cached
	read(r1, 0, 8192)
	if st := ic.Stats(); st.Hits != 2 || st.Misses != 3 || src.n != 5 {
		t.Errorf("%+v, %d reads below", st, src.n)
	}
}

type countingReaderAt struct {
	r io.ReaderAt
	n int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.n++
	return c.r.ReadAt(p, off)
}
