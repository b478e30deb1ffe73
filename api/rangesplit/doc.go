// Package rangesplit evaluates a long PromQL range query on several cores: its Engine
// wraps a promql.QueryEngine and splits a range query at step-aligned points into
// parts, evaluates the parts at once and merges their matrices into the result the
// whole query gives.
//
// Why it is exact: in a range query the engine evaluates every step on its own. A
// selector at step t reads the samples in a window that ends at t (lookback, range,
// offset and a fixed @ timestamp are all relative to t or absolute), subqueries are
// aligned to multiples of their own step counted from the epoch, and step-invariant
// parts (@ <timestamp>) are evaluated once and copied to every step. Nothing a step
// computes depends on where the query starts or ends, except:
//
//   - the @ start() and @ end() modifiers;
//   - the query-context functions start(), end() and range(), and range() in a
//     duration expression;
//   - info(), whose metadata look-up spans the query's range (it is experimental:
//     not split, to be safe).
//
// A query using any of these is passed to the engine whole. So is a query that does
// not parse with Options.Parser, and one whose preprocessed expression prints
// differently for a part than for the whole (a guard against folding this package
// does not know of).
//
// Storage order: aggregations add series in the order the querier returns them, and
// that order depends on which blocks the querier spans (one block: creation order;
// several: label order). Every part therefore reads through a querier over the whole
// query's time range, so it sees the series in the same order as the whole query and
// sums them in the same order, bit for bit. Parts open their queriers one after the
// other, so a sample that arrives while the parts start may be seen by some of them
// only.
//
// Errors: a part that times out or is canceled ends the query with that error. Any
// other error (too many samples, a duplicate label set, a storage error) makes the
// query evaluate again, whole, and return exactly what the engine returns, so error
// messages and which error wins are the engine's. The engine's MaxSamples limit holds
// for each part; so that it also holds for the query as a whole, a split query whose
// parts together peaked above Options.MaxSamples is evaluated again whole too.
//
// When it pays: the parts cost a few percent more CPU than the whole query (each
// selects its series and decodes the chunk it starts in), so splitting helps only
// when cores are idle. With Options.IdleCPUs a query is split into no more parts
// than there are idle CPUs, and the parts are taken by the goroutines as they get a
// core, so when a helper starts late the caller evaluates the parts itself.
//
// Concurrency: every part is an engine query and takes one of the engine's
// concurrency slots (query.max_concurrency) while it runs.
package rangesplit
