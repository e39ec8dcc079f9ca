// Package fsck verifies the shuffle files of a Sluice worker's disks: the
// library behind `sluice fsck`, which tools/sluice mounts with a thin
// command (Main).
//
// Given disk directories (each holding IDENTITY, COMMITLOG and
// data/<job>/<dataset>/map-<m>-<a> and reduce-<r> files, FORMAT.md "Files on
// a disk") or single files, Check verifies every byte with the streaming
// verifiers of package layout, which knows all there is to know about the
// formats, and compares each partition with the disk's commit log:
//
//	OK          the file verifies and matches its commit record
//	CORRUPT     a header, version, CRC, index or total is wrong; the file
//	            differs from its commit record (length, footer CRC,
//	            identity); or a record names a file that does not exist
//	INCOMPLETE  no commit record names the file: a producer that never
//	            committed (or a partition released but not yet removed);
//	            the engine deletes such files at start-up
//	ERROR       the file could not be read, or a newer Sluice wrote it
//	OTHER       not a Sluice file name; left alone
//
// A file given alone is verified for its format; its commit state is
// unknown and said to be so.
//
// Every read goes through the engine's IO seam (engine/diskio) into aligned
// buffers from engine/mem: large sequential reads (4 MiB by default),
// several in flight per file, so the disk streams while the CPU checks the
// CRCs, and several files in parallel (Options.Jobs) when the disk is fast.
// With the direct backends the page cache is bypassed, so a verdict is about
// the disk, not about memory.
//
// With Options.Quarantine, CORRUPT partitions of a disk are moved aside into
// a quarantine directory, keeping their paths, and the disk's commit log
// releases them (and the records of missing files), so that the engine no
// longer serves or expects them and a second fsck finds the disk clean.
// Nothing is ever deleted; a manifest in the quarantine directory records
// every move and release, and Restore puts them back.
package fsck
