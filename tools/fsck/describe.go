package fsck

import (
	"errors"
	"fmt"
	"io"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
)

// describeBlockBytes is the read size of Describe: one block, cached, serves
// the describer's many small reads of neighbouring structures.
const describeBlockBytes = 1 << 20

// Describe prints the Sluice file at path as decoded structure and
// annotated hex (layout.Describe), reading it through the IO seam.
func Describe(w io.Writer, path string, opts Options, dopts layout.DescribeOptions) (err error) {
	if opts.Log == nil {
		opts.Log = discardLog()
	}
	s, err := newIOs(&opts, 1)
	if err != nil {
		return err
	}
	pool, err := mem.New(mem.Config{BufferBytes: describeBlockBytes, Buffers: 1})
	if err != nil {
		return errors.Join(err, s.close())
	}
	buf := pool.TryGet()
	defer func() {
		buf.Release()
		err = errors.Join(err, pool.Close(), s.close())
	}()
	f, fio, err := s.open(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	size, err := f.Size()
	if err != nil {
		return err
	}
	ra := &blockReaderAt{io: fio, f: f, buf: buf.Bytes(), size: size}
	return layout.Describe(w, ra, size, dopts)
}

// blockReaderAt is an io.ReaderAt over the seam: it reads whole aligned
// blocks (as O_DIRECT requires) and serves reads from the last one.
type blockReaderAt struct {
	io     diskio.IO
	f      *diskio.File
	buf    []byte
	size   int64
	bufOff int64
	bufN   int
	valid  bool
}

func (r *blockReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fsck: read at negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o >= r.size {
			return n, io.EOF
		}
		if !r.valid || o < r.bufOff || o >= r.bufOff+int64(r.bufN) {
			block := o - o%int64(len(r.buf))
			q := &diskio.Request{Op: diskio.OpRead, File: r.f, Buf: r.buf, Off: block}
			r.valid = false
			if err := diskio.Do(r.io, q); err != nil {
				return n, err
			}
			if q.N <= int(o-block) {
				return n, fmt.Errorf("fsck: read %s at %d: the file shrank to %d bytes", r.f.Name(), o, block+int64(q.N))
			}
			r.bufOff, r.bufN, r.valid = block, q.N, true
		}
		n += copy(p[n:], r.buf[o-r.bufOff:r.bufN])
	}
	return n, nil
}
