// Package logcore is Vigil's embedded durable partitioned log: Kafka's log layer in one
// Go process. A Log holds topics; a topic holds a fixed number of partitions; a
// partition is a sequence of records with dense, monotonic offsets, stored as a run of
// segment files. The Log, Topic and OffsetStore interfaces in log.go are the seam: the
// file log (FileLog) implements them, and a JetStream-backed log can too.
//
// # Directory layout
//
//	<dir>/LOCK                                 flock'd while a process has the log open
//	<dir>/<topic>/topic.json                   TopicConfig, written atomically
//	<dir>/<topic>/<partition>/<base>.log       segment: header, then record batches
//	<dir>/<topic>/<partition>/<base>.index     sparse offset index of that segment
//	<dir>/<topic>/<partition>/<base>.timeindex sparse time index of that segment
//	<dir>/__consumer_offsets/...               the internal compacted topic of group offsets
//	<dir>/__journal/<seq>.wal                  the commit journal of FsyncAlways appends
//
// <base> is the offset of the segment's first record, printed as %020d, so that
// names sort like offsets. The last segment of a partition is the active one; only it
// is written. A segment rolls (is closed and a new one started) when the next batch
// would make it larger than TopicConfig.SegmentBytes, or when it is older than
// TopicConfig.SegmentAge. A roll syncs the old segment and its indexes, creates the new
// file with its header, syncs it and then syncs the directory.
//
// # Segment file (part of the on-disk format; all integers little endian)
//
//	 0       4         5       6          8              16             24
//	+--------+---------+-------+----------+--------------+--------------+
//	| magic  | version | flags | reserved | base offset  | created (ms) |
//	| "VGLS" |    1    |   0   |    0     |    int64     |    int64     |
//	+--------+---------+-------+----------+--------------+--------------+
//	| batch | batch | batch | ...
//
// # Record batch
//
// Each Append writes exactly one batch. Readers and recovery see whole batches or
// nothing.
//
//	 0        4        8              16          20      24           32         40      42       44         48
//	+--------+--------+--------------+-----------+-------+------------+----------+-------+--------+----------+---------+
//	| length | crc32c | base offset  | last delta| count | first ts   | max ts   | attrs | unused | raw len  | payload |
//	| uint32 | uint32 | int64        | uint32    | uint32| int64 (ms) | int64    | uint16| uint16 | uint32   | ...     |
//	+--------+--------+--------------+-----------+-------+------------+----------+-------+--------+----------+---------+
//
// The fields:
//   - length counts the bytes after the length field (44 + len(payload)).
//   - crc32c (Castagnoli) covers bytes 16..end of the batch, then bytes 8..16 (the
//     base offset). Producers checksum the body in parallel; the writer, which assigns
//     the base offset, only extends the checksum by those 8 bytes.
//   - last delta is the offset of the batch's last offset minus the base offset;
//     count is the number of records present. They differ only in batches rewritten by
//     compaction, which keeps offsets and so leaves gaps.
//   - attrs bits 0-2 are the compression codec of the payload: 0 none, 1 S2; the other
//     bits are zero.
//   - raw len is the payload's uncompressed size, checked before decompressing.
//
// The payload is count records, each:
//
//	uvarint offset delta | varint timestamp - first ts | uvarint key length + 1 (0 = nil key) |
//	uvarint value length | key bytes | value bytes
//
// # Index files
//
// The .index file is a run of 8-byte entries (relative offset uint32, file position
// uint32): the batch holding base+relative offset starts at that position. An entry is
// added at most every Options.IndexIntervalBytes of log. The .timeindex file is a run of
// 12-byte entries (timestamp int64, relative offset uint32): timestamp is the largest
// record timestamp in the segment up to and including the batch at that offset. The
// writer adds entries to both files together, so they name the same batches, and
// writes them a few at a time after answering the producers (and all at a roll or
// close), so a crash may leave the last few entries out: recovery then scans a little
// more. Index
// files have no header and no checksum: they only speed up lookups, the log stays the
// source of truth, and an index that does not fit the log is rebuilt from it:
//   - At open, only the longest prefix of entries that grow and point inside the
//     file is kept. Of the active segment, open checks only the last entry it
//     starts its tail scan from (see below). A closed segment's indexes are kept when
//     their last entry names the segment's last batch and the time index names the
//     same batches; otherwise the segment is scanned and both files are rewritten.
//   - On read, the batch an entry points at must carry the entry's offset and pass
//     its checksum, and a time lookup checks its start batch against its time entry.
//     When an entry fails this, the segment's indexes are rebuilt by a scan and the
//     read is retried. For a closed segment the files are rewritten at once; for the
//     active one the writer keeps the entries it made meanwhile and rewrites its files
//     at its next index flush. (A time entry whose timestamp is damaged but still in
//     order is found only by a time lookup that starts at it.)
//
// # Reads
//
// A read checks every batch it returns (length, checksum, payload, records) and the
// offsets of every batch it passes: in a topic that is not compacted each batch starts
// where the previous one ended, in a compacted one offsets only grow. Data failing a
// check is never returned: a read returns the good batches before a bad one, and a
// read that starts at a bad batch fails with an error wrapping ErrCorrupt. A
// Consumer's Poll so delivers every record up to the damage, then returns that error
// and keeps its position (the caller may SeekTo past the damage). Opening the log
// skips damaged batches of the consumer-offsets topic (a group then resumes from an
// older commit, re-reading records rather than skipping them).
//
// # Durability and recovery
//
// Each partition has one writer goroutine that owns the active segment. Producers
// encode their batches on their own goroutines and queue them; the writer takes every
// queued batch, writes them with one pwrite, and with FsyncAlways makes them durable
// before it answers any of them (group commit). Readers only see committed data:
// durable data under FsyncAlways, written data under the other policies.
//
// Under FsyncAlways one commit journal serves every partition of every topic, so that a
// round costs one fdatasync however many partitions it touches (on the disks measured,
// fdatasyncs of different files are served one after another: eight partitions took
// eight times as long as one). The writer does not sync its segment: it hands the bytes
// it wrote, with its topic, partition, segment and position, to the journal's goroutine,
// which appends the entries waiting at that moment to its current file (each entry
// framed with its length and CRC32C) and syncs that file once; then it publishes those
// rounds and answers their appends itself. A writer does not wait for its round: it goes
// on writing the next ones (at most 8 in flight), so that while the journal syncs, every
// partition's next round gets ready for the following sync. Under FsyncAlways an
// appender that finds its partition's writer free writes its round itself, under the
// writer's lock, instead of waking the writer goroutine. A segment is synced when it rolls, when the log closes, and when the
// journal file passes Options.JournalBytes (64 MiB): the journal then goes on in a new
// file and removes the old one once every partition that wrote to it has synced its
// segment. On open, before any partition loads, every journal entry for its partition's
// newest segment whose bytes are not in place is written back (entries for older
// segments were synced when those closed; an entry for a segment newer than any on disk
// is an error, as a segment is created durably before anything is appended to it), the
// written segments are synced and the journal files removed; a torn entry ends its
// file, as nothing after it was acknowledged. A journal write that fails (a full disk,
// say) is truncated away and fails only the appends of its round, which undo their
// segment writes as after a failed segment write below; the partitions and the journal
// go on. The rounds a partition wrote after a failed one fail with it, unjournaled, as
// their bytes are cut away with it. A failed journal sync fails the appends of its
// round, which truncate their segments and fail their partitions as after a failed
// segment sync below; the journal
// truncates the round away and goes on in a new file, leaving the old one to be
// replayed at the next open. Topic names starting with __ are reserved for the log's
// own files.
//
// On open, closed segments are trusted after the cheap check of their indexes above;
// their data is not read. The active segment is scanned only from its last index entry
// that points at a valid batch: the tail is read batch by batch, checking lengths,
// checksums and offsets, and the file is truncated at the first batch that does not
// check out (a torn write), and the cut is synced (not under FsyncNever, where it would
// mean writing back all the dirty pages a killed process left). What was cut off is
// logged with its offsets. The bytes
// scanned this way are counted in vigil_log_recovery_scanned_bytes_total. Apart from
// the index files, nothing else of the log is read. Recovery time therefore grows with
// the unsynced tail, not with the log's size.
//
// A segment whose header is bad (a roll that crashed before the header reached the
// disk, or a damaged header) gets a fresh header from its file name and its batches are
// checked by a full scan; they carry their own checksums, so nothing is lost to a bad
// header. A closed segment is never truncated: if a scan meets a bad batch there (damage
// to synced data, not a torn write), the error is logged and the batch and what follows
// it in that segment stay on disk, where reads report them as ErrCorrupt instead of
// silently skipping their offsets.
//
// A write or sync that fails truncates the segment back to the last committed position
// and returns the error to every producer of the group; a full disk (ENOSPC, EFBIG) is
// such an error, and appends work again once there is space. A roll that cannot create
// the new segment fails the append that needed it and leaves the old segment active.
// If the truncate itself fails, or a sync fails (after which the kernel's page state is
// unknown), the partition is failed: every later Append returns the error until the log
// is reopened. Committed data stays readable in all these cases.
//
// Compaction keeps, in the closed segments of a compacted topic, the latest record of
// each key (and records without a key); tombstones go once older than
// TombstoneRetention. Offsets do not change: removed records leave gaps that reads
// step over. A closed segment left with no record is deleted, wherever it lies. A
// segment that loses some records is rewritten: compaction writes the rewrite to
// <base>.cleaned, syncs it, removes the old index files and renames the rewrite over
// the segment, then syncs the directory. A crash before the rename leaves the original segment (open deletes *.cleaned and
// rebuilds the missing indexes); a crash after it leaves the rewrite, which is as valid.
//
// # Metrics
//
// vigil_log_appended_bytes_total, vigil_log_appended_records_total,
// vigil_log_fsyncs_total, vigil_log_fsync_duration_seconds (a summary of fdatasync
// latency, the cost under every FsyncAlways append), vigil_log_append_errors_total,
// vigil_log_retention_deleted_segments_total, vigil_log_compactions_total,
// vigil_log_recovery_scanned_bytes_total,
// vigil_log_consumer_lag{group,topic,partition} (computed at scrape time) and
// vigil_log_consumer_skipped_records_total{group,topic}.
//
// # How the promises are tested
//
// journal_test.go cuts the power in effect (copies the log keeping of each file only
// what fdatasync made durable) after acknowledged appends, with and without journal
// rotations, and checks that without the journal records are lost and with it none
// are; crash_test.go kills a child appending with FsyncAlways (and compacting and applying
// retention) with SIGKILL 24 times and checks every acknowledged record after each
// reopen; corruption_test.go truncates and flips bits in active and closed segments and
// damages index files; diskfull_test.go fills a tmpfs (or a file-size limit), injects
// EIO into writes and syncs and opens read-only directories; recovery_test.go counts
// the bytes Open scans; fuzz_test.go fuzzes the batch decoder, the index parsers and
// Open over arbitrary segment files. The benchmarks in log_bench_test.go measure group
// commit against the disk's own synced write bandwidth, batched appends, page-cache
// reads and reopening a 1 GiB partition after SIGKILL.
package logcore
