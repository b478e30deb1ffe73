// Package rollup is Vigil's streaming aggregation engine: it turns the samples topic
// into windowed aggregates ("rollups") with event-time windows, watermarks, lateness
// and exactly-once checkpoints. It is a library: no flags, no globals, no HTTP;
// cmd/vigil builds an Engine from the config and wires its outputs.
//
// # Model
//
// A rollup matches series with a PromQL selector, groups them by (or without) labels,
// and computes its outputs over tumbling windows [k·interval, (k+1)·interval) of
// sample timestamps. Output series are named as VictoriaMetrics stream aggregation
// names them: <metric>:<interval>[_by_<labels>|_without_<labels>]_<output>, the label
// lists sorted and joined with "_", e.g. http_requests_total:5s_by_code_service_rate_sum;
// they keep the group's labels, and their samples carry the window's end timestamp.
//
// Each input partition is aggregated by its own goroutine with its own state. Its
// watermark, per rollup, is the newest sample timestamp it has seen minus the rollup's
// lateness; a window whose end the watermark has passed is sealed in that partition,
// and a later sample for it is late (vigil_rollup_late_samples_total) and dropped.
// A partition with no unread input moves its watermark to the wall clock minus
// lateness, so quiet streams still close their windows. A sample moves the watermark
// by at most its record's append time (kept in the log), so a sample from a client
// with a clock ahead is aggregated without making everyone else's samples late. A window is emitted when every
// partition has sealed it: the coordinator merges the partitions' partial states in
// partition order and flushes the outputs.
//
// # Exactly once
//
// Every emitted window is first appended to the rollups topic (partition 0; record
// format in result.go), then written to the query store, then passed to the OnResult
// and OnWindowClosed callbacks. Every CheckpointInterval the engine takes a
// consistent cut (a barrier: each partition snapshots between batches and pauses until
// the coordinator has snapshot too) and writes it to CheckpointDir/checkpoint together
// with each partition's input offset and the rollups topic's end offset.
//
// On start the engine restores the checkpoint, reads the rollups topic from the
// recorded offset to mark the windows emitted since (they are re-written to the query
// store, which ignores identical samples, and never emitted again), and replays each
// partition from its checkpointed offset. A partition's sealing from sample timestamps
// depends only on its own input order, so the replay recomputes it exactly. Sealing by
// the wall clock (idle partitions) does not replay by itself, so every emitted window
// records, per partition, the input offset and sealed boundary the coordinator last
// heard (the marks in its record); the replay re-applies those seals at the same
// offsets. Samples that were late for anything already emitted are late again (a seal
// after the last emitted window is not recorded and may fall elsewhere on replay, but
// nothing that depended on it had been emitted), and every window is emitted exactly
// once with the values of a run that never crashed.
//
// # Checkpoint file
//
//	magic "VGRLCKP1" | crc32c(body) uint32 LE | len(body) uint64 LE | body (gob checkpointData)
//
// written to checkpoint.tmp, fsynced, renamed over checkpoint, directory fsynced. A
// corrupt checkpoint is reported and ignored (the engine starts from the retained log).
//
// # Memory
//
// Per group and open window a partition keeps a 56-byte accumulator (count, sum, min,
// max, last) in pages indexed by group id; outputs that need more (stddev/stdvar,
// count_series, counter outputs, quantiles, histogram_bucket) add an extension, reused
// from window to window.
// Series and groups silent for longer than any rollup keeps state are dropped.
package rollup
