package engine

import (
	"crypto/rand"
	"encoding/hex"
	"os"

	"github.com/sluice-shuffle/sluice/layout"
)

// Inode placement. ext4 gives a new file an inode in the block group of its
// directory (with flex_bg, the first group of that directory's flex group
// with free inodes). Without a journal it also skips every inode of the
// group freed in the last minute or more (recently_deleted), one buffer
// cache lookup each: once a few thousand files were deleted there, a new
// file costs 0.4–1 ms of CPU instead of 20–40 µs. A worker deletes and
// creates files all day.
//
// So the dataset's directory does not decide. The disk makes each file with
// O_TMPFILE in an inode directory, data/.inodes-<random>, and links it into
// the dataset's directory (diskio.CreateFile). The Orlov allocator places
// the inode directory in a group picked from a hash of its random name
// (data/ has the top-of-hierarchy flag, see spreadSubdirs). After
// inodeDirFiles files the disk moves on to a new inode directory, in another
// group, and removes the old one, which is empty, once no creation uses it.
// Recovery removes those a crash left.

// inodeDir is an inode directory.
type inodeDir struct {
	rel     string
	made    int // files begun in it
	users   int // creations under way
	retired bool
}

// inodeDirFiles is how many files an inode directory takes: half of
// ext4's usual 8,192 inodes a group.
var inodeDirFiles = 4096

// inodeDirLocked returns the inode directory for the next file,
// counting the caller as a user (leaveInodeDirLocked ends it), or nil when
// none can be made: the file then gets its inode by its own directory.
// Called with d.mu held, once data/ exists.
func (d *Disk) inodeDirLocked() *inodeDir {
	p := d.inodes
	if p == nil || p.made >= inodeDirFiles {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand)
		rel := layout.DataDir + "/" + layout.InodeDirPrefix + hex.EncodeToString(b[:])
		if err := os.Mkdir(d.abs(rel), 0o755); err != nil {
			if p == nil {
				d.log.Warn("engine: no inode directory; new files get their inodes by their datasets' directories", "err", err)
				return nil
			}
			p.made = 0 // keep the old one for another round
		} else {
			if p != nil {
				p.retired = true
				d.dropInodeDirLocked(p)
			}
			p = &inodeDir{rel: rel}
			d.inodes = p
		}
	}
	p.made++
	p.users++
	return p
}

// leaveInodeDirLocked ends a creation that used p.
func (d *Disk) leaveInodeDirLocked(p *inodeDir) {
	p.users--
	d.dropInodeDirLocked(p)
}

// retireInodeDirLocked retires the current inode directory (at close).
func (d *Disk) retireInodeDirLocked() {
	if p := d.inodes; p != nil {
		d.inodes = nil
		p.retired = true
		d.dropInodeDirLocked(p)
	}
}

// dropInodeDirLocked removes p once it is retired and unused.
func (d *Disk) dropInodeDirLocked(p *inodeDir) {
	if p.retired && p.users == 0 {
		if err := os.Remove(d.abs(p.rel)); err != nil {
			d.log.Warn("engine: removing an inode directory", "dir", p.rel, "err", err)
		}
	}
}
