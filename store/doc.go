// Package store is Vigil's query store: the prometheus module's TSDB holding the raw
// samples of the log's "samples" topic (and whatever later stages write through
// Appendable), the PromQL engine over it, and the materializer that keeps it filled.
//
// # Durability: the log is the write-ahead log
//
// The TSDB runs with its own WAL disabled (tsdb.Options.WALSegmentSize < 0): every raw
// sample is already durable in the log, so a second WAL would only double the write
// cost. What is durable in the store is therefore exactly its persisted blocks; the
// in-memory head is rebuilt after a restart by replaying the log.
//
// The materializer's consumer group ("materializer") commits a partition's offset only
// past records whose every accepted sample is inside a persisted block:
//
//   - after each appender commit a worker notes a mark (next offset, newest accepted
//     sample timestamp of the records since the previous mark);
//   - a checkpoint takes the marks noted so far (freezing them) and runs the TSDB's head
//     compaction. Afterwards every in-order sample older than the head's minimum time
//     is in a block: only a head compaction removes in-order samples from the head,
//     and the head holds none older than its minimum. The marks before the first one
//     whose newest sample is at or after that minimum can be committed once the
//     out-of-order head is compacted too (their samples may have gone there), which
//     the checkpoint then does before committing. (The newest block's end is not a
//     safe bound: out-of-order compaction writes blocks that reach past the in-order
//     head's minimum.)
//   - a clean Stop cuts the rest of the head into blocks and commits every position.
//
// So a kill -9 loses nothing (the log still holds every record after the committed
// offset and they are replayed into the head) and counts nothing twice: a replayed
// sample already in a block is either refused as too old or stored again with the same
// timestamp and value, and the TSDB's queriers merge series across blocks and the head
// de-duplicating equal timestamps (storage.ChainedSeriesMerge).
//
// The cost is replay time: after a crash up to about 1.5 block durations of samples are
// replayed (the head is cut into a block once it spans 1.5 × query.block_duration). A
// replay advances all partitions in step, each held within a quarter block duration of
// the oldest record another has not appended yet, so that one partition running ahead
// does not push the head's time past what the others may still append (the TSDB
// refuses samples older than the head's newest minus half a block duration, or the
// out-of-order window). And a restarted TSDB's head starts at the newest in-order
// block's end, which a kill -9 between a cut and its commit leaves ahead of the
// replay: out-of-order samples of the replayed records that are in no block yet would
// be refused as too old. So while it replays, the materializer widens the out-of-order
// window by the distance from the oldest replayed record to that end (and half a block
// more); a replay may therefore also take a few samples the live store had refused.
//
// Derived series written through Appendable (recording rules, ALERTS, rollup outputs)
// are not in the log, so they go to a second TSDB that keeps its WAL: they are durable
// when the appender commits, and kept for query.rollup_retention instead of the raw
// retention. Queryable merges both.
package store
