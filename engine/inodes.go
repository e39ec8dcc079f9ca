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
// inodeDirFiles files the disk moves on to a new inode directory, most
// likely in another group, and removes the old one, which is empty, once no
// creation uses it. Recovery removes those a crash left.

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

// inodeDirLocked returns the inode directory for the next file, counting
// the caller as a user (leaveInodeDirLocked ends it), or nil: the disk is
// closed, or no inode directory could be made (the file then gets its
// inode by its own directory, and the disk tries again inodeDirFiles files
// later). drop is a retired directory for the caller to remove once d.mu
// is released (removeInodeDir). Called with d.mu held, once data/ exists.
func (d *Disk) inodeDirLocked() (p *inodeDir, drop string) {
	if d.closed.Load() {
		return nil, ""
	}
	p = d.inodes
	if p == nil || p.made >= inodeDirFiles {
		if d.inodesSkip > 0 {
			d.inodesSkip--
		} else if np, err := d.makeInodeDir(); err != nil {
			if !d.inodesFailing {
				d.log.Warn("engine: no new inode directory; files get their inodes by their own directories for a while", "err", err)
				d.inodesFailing = true
			}
			d.inodesSkip = inodeDirFiles
		} else {
			d.inodesFailing = false
			if p != nil {
				p.retired = true
				drop = dropped(p)
			}
			d.inodes, p = np, np
		}
	}
	if p != nil {
		p.made++
		p.users++
	}
	return p, drop
}

// makeInodeDir makes a new inode directory under a random name.
func (d *Disk) makeInodeDir() (*inodeDir, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	rel := layout.DataDir + "/" + layout.InodeDirPrefix + hex.EncodeToString(b[:])
	if err := os.Mkdir(d.abs(rel), 0o755); err != nil {
		return nil, err
	}
	return &inodeDir{rel: rel}, nil
}

// leaveInodeDirLocked ends a creation that used p; it returns p when p is
// now to be removed (removeInodeDir), else "".
func (d *Disk) leaveInodeDirLocked(p *inodeDir) string {
	p.users--
	return dropped(p)
}

// retireInodeDirLocked retires the current inode directory (at close), and
// returns it when it is to be removed now.
func (d *Disk) retireInodeDirLocked() string {
	p := d.inodes
	if p == nil {
		return ""
	}
	d.inodes = nil
	p.retired = true
	return dropped(p)
}

// dropped returns p's path once p is retired and unused, else "".
func dropped(p *inodeDir) string {
	if p.retired && p.users == 0 {
		return p.rel
	}
	return ""
}

// removeInodeDir removes a dropped inode directory (rel "": nothing).
func (d *Disk) removeInodeDir(rel string) {
	if rel == "" {
		return
	}
	if err := os.Remove(d.abs(rel)); err != nil {
		d.log.Warn("engine: removing an inode directory", "dir", rel, "err", err)
	}
}
