// Package layout is Sluice's on-disk formats: encoders, decoders, checksums,
// versions, and streaming verifiers for every file a worker writes. It never
// opens a file: encoders append to caller buffers, decoders take []byte or
// io.ReaderAt, verifiers are io.Writers fed with a file's bytes in order. The
// byte-exact specification is FORMAT.md beside this file; golden files of
// every released version are in testdata/format/.
//
// All integers are little-endian, every checksum is CRC32C (Castagnoli), and
// no file has alignment or padding inside it (the engine pads its last
// O_DIRECT write in memory and truncates the file to its length at commit).
// Every file starts with the same 16-byte prefix, and every header ends with
// a CRC32C of the rest of it:
//
//	+----------+-------+-------+--------------+---------------------+--------+
//	| magic    | major | minor | headerLength | kind-specific       | CRC32C |
//	| 8 bytes  | u16   | u16   | u32          | fields              | u32    |
//	+----------+-------+-------+--------------+---------------------+--------+
//
// # MapPartition: one file per producer attempt
//
//	+--------+--------------+----------+-----+--------------+----------+-----------+--------+
//	| header | region 0     | region 0 | ... | region R-1   | region   | directory | footer |
//	|        | buffers      | index    |     | buffers      | R-1 index|           | 72 B   |
//	+--------+--------------+----------+-----+--------------+----------+-----------+--------+
//
//	header:  prefix "SLUICEMP" | map u32 | attempt u32 | subpartitions u32 | codec u8 |
//	         jobLen u8 | datasetLen u8 | job | dataset | CRC32C
//
// A region is one client sort-spill: buffers in ascending subpartition order,
// several per subpartition if need be, or (broadcast) buffers for all
// subpartitions stored once. A buffer is a 24-byte header and its payload;
// the same bytes travel in read-data frames, so a consumer checks both CRCs:
//
//	+------+-------+-------+--------------+---------+--------------+---------+---------+---------+
//	| 'B'  | codec | flags | subpartition | payload | uncompressed | payload | header  | payload |
//	|      | u8    | u16   | u32          | len u32 | len u32      | CRC32C  | CRC32C  | …       |
//	+------+-------+-------+--------------+---------+--------------+---------+---------+---------+
//	0      1       2       4              8         12             16        20        24
//
// After its buffers, each region has index blocks of at most 4 KiB that give
// each subpartition's end offset within the region; dense blocks list every
// subpartition of a range (4 bytes each), sparse ones only those with data
// (8 bytes each), a broadcast region has one entry shared by all:
//
//	+------+----------+-------+--------+-----------+----------+---------------------+--------+
//	| 'I'  | encoding | count | region | first sub | startRel | relEnd u32 …  or    | CRC32C |
//	|      | u8       | u16   | u32    | u32       | u32      | (sub u32, relEnd) … | u32    |
//	+------+----------+-------+--------+-----------+----------+---------------------+--------+
//
// The directory locates every region and index block, so a reader of a
// subpartition range reads, per region, at most one index block per end of
// the range:
//
//	+------+---------+--------+------------------------------------------+---------------------+--------+
//	| 'D'  | regions | blocks | per region: dataOffset u64, dataLength,  | per block: firstSub | CRC32C |
//	|      | u32     | u32    | indexLength, buffers, blocks, lastSub,   | u32, indexRel u32   |        |
//	|      |         |        | flags (u32 each)                         |                     |        |
//	+------+---------+--------+------------------------------------------+---------------------+--------+
//
//	footer:  "SLUICEMF" | directory offset u64 | directory length u32 | regions u32 |
//	         buffers u64 | data bytes u64 | index bytes u64 | uncompressed bytes u64 |
//	         file length u64 | header CRC copy u32 | CRC32C
//
// # ReducePartition: one file per subpartition
//
//	+--------+---------+---------+-----+---------+---------------+--------+
//	| header | segment | segment | ... | segment | attempt table | footer |
//	+--------+---------+---------+-----+---------+---------------+--------+
//
//	header:  prefix "SLUICERP" | reduce u32 | maps u32 | codec u8 | jobLen u8 |
//	         datasetLen u8 | job | dataset | CRC32C
//
//	+------+-------+-------+-----+---------+-----+---------+--------------+---------+---------+---------+
//	| 'S'  | codec | flags | map | attempt | seq | payload | uncompressed | payload | header  | payload |
//	|      | u8    | u16   | u32 | u32     | u32 | len u32 | len u32      | CRC32C  | CRC32C  | …       |
//	+------+-------+-------+-----+---------+-----+---------+--------------+---------+---------+---------+
//	0      1       2       4     8         12    16        20             24        28        32
//
//	attempt table:  'A' | entries u32 | (map u32, attempt u32, segments u32, bytes u64) … | CRC32C
//	footer:  "SLUICERF" | table offset u64 | table length u32 | entries u32 | segments u64 |
//	         segment bytes u64 | committed segments u64 | committed bytes u64 |
//	         file length u64 | header CRC copy u32 | CRC32C
//
// Segments of one (map, attempt) have seqs 0, 1, 2, …; a retried push
// repeats a seq. A reader serves each committed attempt's seqs once
// (ReduceFilter) and nothing of other attempts.
//
// # Per-disk metadata
//
//	IDENTITY:   prefix "SLUICEID" | disk id 16 B | worker id 16 B | created i64 ns | CRC32C
//
//	COMMITLOG:  prefix "SLUICECL" | disk id 16 B | generation u64 | first LSN u64 | CRC32C
//	            then records:
//	+--------+--------+-----------+--------+------+------------------------------------+
//	| CRC32C | length | batch pos | LSN    | kind | body: fixed fields, jobLen u8,     |
//	| u32    | u16    | u16       | u64    | u8   | datasetLen u8, job, dataset        |
//	+--------+--------+-----------+--------+------+------------------------------------+
//
// Records are appended with group commit; a torn last write is ignored (a
// damaged record followed by a later write's record is corruption), zero
// padding may follow the last record, and a compacted log (generation > 0)
// starts with a snapshot closed by a SnapshotEnd record. File names are
// derived from identities (MapPartitionPath, ReducePartitionPath), never
// stored.
//
// # Errors
//
// Bad bytes are a *CorruptError (errors.Is ErrCorrupt; ErrTruncated for a
// file that ends early, which is also ErrCorrupt) carrying file kind,
// offset, length, expected and found values, and whether one flipped bit
// explains a checksum mismatch; a newer major is a *VersionError (ErrVersion).
// Bytes from disk never cause a panic, and no length is allocated for
// before it is checked.
package layout
