package rollup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vigilhq/vigil/logcore"
)

// partMsg is what a partition goroutine sends to the coordinator; the channel keeps
// each partition's messages in order, which the checkpoint barrier relies on.
type partMsg struct {
	seal *sealMsg
	snap *snapReply
	err  error
}

type snapReply struct {
	part int
	data []byte
	err  error
}

// worker runs one partition.
type worker struct {
	e       *Engine
	p       *partition
	c       *logcore.Consumer
	snapReq chan chan struct{}

	mu     sync.Mutex
	cancel context.CancelFunc // of the Poll in progress
}

// wake interrupts a Poll that is waiting for input.
func (w *worker) wake() {
	w.mu.Lock()
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
}

func (w *worker) run(ctx context.Context, out chan<- partMsg) {
	var seals []sealMsg
	for ctx.Err() == nil {
		select {
		case resume := <-w.snapReq:
			data, err := w.p.snapshot()
			out <- partMsg{snap: &snapReply{part: w.p.id, data: data, err: err}}
			select {
			case <-resume:
			case <-ctx.Done(): // the checkpoint is abandoned; the state is whole between batches
				return
			}
			continue
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, w.e.opts.IdleInterval)
		w.mu.Lock()
		w.cancel = cancel
		w.mu.Unlock()
		var recs []logcore.Record
		var err error
		if len(w.p.rules) == 0 {
			// No rollup is configured: there is nothing to aggregate, so nothing is read;
			// the position follows the partition's end, where a rollup added by a
			// reload starts (as if the records had been read and ignored).
			if err = w.e.opts.Samples.Wait(pctx, w.p.id, w.c.Position()); err == nil {
				end := w.e.opts.Samples.Stats(w.p.id).EndOffset
				w.c.SeekTo(end)
				w.p.offset = max(w.p.offset, end)
			}
		} else {
			recs, err = w.c.Poll(pctx, 1<<20)
		}
		w.mu.Lock()
		w.cancel = nil
		w.mu.Unlock()
		cancel()
		switch {
		case err == nil:
			for i := range recs {
				w.p.processBatch(recs[i].Offset, recs[i].Timestamp, recs[i].Value)
			}
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			if w.c.Position() >= w.e.opts.Samples.Stats(w.p.id).EndOffset {
				w.p.offset = max(w.p.offset, w.c.Position())
				w.p.applyForced(w.p.offset)
				w.p.advanceIdle(w.e.opts.Now().UnixMilli())
			}
		default:
			out <- partMsg{err: fmt.Errorf("rollup: read samples partition %d at offset %d: %w", w.p.id, w.c.Position(), err)}
			return
		}
		seals = w.p.collect(seals[:0])
		for i := range seals {
			m := seals[i]
			out <- partMsg{seal: &m}
		}
	}
}

// runGeneration runs the partitions until ctx ends (it returns nil, nil after a final
// checkpoint) or a reload arrives (it returns the request with every goroutine
// stopped and all their reports handled).
func (e *Engine) runGeneration(ctx context.Context) (*reloadReq, error) {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := make(chan partMsg, 4*len(e.parts)+64)
	workers := make([]*worker, len(e.parts))
	var wg sync.WaitGroup
	for i, p := range e.parts {
		c, err := logcore.NewConsumer(e.opts.Log, e.opts.Group, e.opts.Samples, i)
		if err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("rollup: consumer for partition %d: %w", i, err)
		}
		c.SeekTo(p.offset)
		w := &worker{e: e, p: p, c: c, snapReq: make(chan chan struct{}, 1)}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(gctx, msgs)
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	// stop ends the workers and handles every report they sent, so that the
	// partitions and the coordinator agree again.
	stop := func() error {
		cancel()
		var firstErr error
		for {
			select {
			case m := <-msgs:
				if err := e.handleMsg(&m); err != nil && firstErr == nil {
					firstErr = err
				}
			case <-done:
				for {
					select {
					case m := <-msgs:
						if err := e.handleMsg(&m); err != nil && firstErr == nil {
							firstErr = err
						}
					default:
						return firstErr
					}
				}
			}
		}
	}
	tick := time.NewTicker(e.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case m := <-msgs:
			if err := e.handleMsg(&m); err != nil {
				stop()
				return nil, err
			}
		case <-tick.C:
			if err := e.checkpoint(&barrier{workers, msgs, done}); err != nil {
				var fe fatalError
				if errors.As(err, &fe) {
					stop()
					if ctx.Err() != nil && errors.Is(fe.err, errStopped) {
						return nil, e.checkpoint(nil)
					}
					return nil, fe.err
				}
				e.metrics.ckptErrs.Inc()
				e.opts.Logger.Error("rollup checkpoint failed", "err", err)
			}
		case req := <-e.reloadCh:
			if err := stop(); err != nil {
				req.done <- err
				return nil, err
			}
			return &req, nil
		case <-ctx.Done():
			if err := stop(); err != nil {
				return nil, err
			}
			return nil, e.checkpoint(nil)
		}
	}
}

func (e *Engine) handleMsg(m *partMsg) error {
	switch {
	case m.err != nil:
		return m.err
	case m.seal != nil:
		return e.coord.handle(m.seal)
	}
	return nil // a snapshot for a checkpoint that was abandoned
}

// barrier is what a checkpoint of running workers needs: the workers, their message
// channel and the channel closed when they have all exited.
type barrier struct {
	workers []*worker
	msgs    chan partMsg
	done    chan struct{}
}

// fatalError wraps an error that must end Run (a partition failed, or the workers
// stopped under a checkpoint).
type fatalError struct{ err error }

func (f fatalError) Error() string { return f.err.Error() }

var errStopped = errors.New("rollup: partitions stopped during a checkpoint")

// checkpoint saves one consistent cut. With workers running it is a barrier: each
// partition snapshots itself between batches and pauses; once every snapshot is in,
// the coordinator has handled exactly the reports sent before them, and is snapshot
// too; then the partitions resume and the file is written. With workers nil the
// goroutines are stopped and the state is read directly.
func (e *Engine) checkpoint(b *barrier) error {
	t0 := time.Now()
	d := &checkpointData{Version: checkpointVer, Partitions: len(e.parts), Parts: make([][]byte, len(e.parts))}
	var resume chan struct{}
	defer func() {
		if resume != nil {
			close(resume)
		}
	}()
	if b == nil {
		for i, p := range e.parts {
			b, err := p.snapshot()
			if err != nil {
				return err
			}
			d.Parts[i] = b
		}
	} else {
		resume = make(chan struct{})
		for _, w := range b.workers {
			select {
			case w.snapReq <- resume:
			default: // a request of an abandoned checkpoint is still pending: it serves
			}
			w.wake()
		}
		var snapErr error
		for got := 0; got < len(b.workers); {
			var m partMsg
			select {
			case m = <-b.msgs:
			case <-b.done:
				return fatalError{errStopped}
			}
			if m.snap != nil {
				got++
				d.Parts[m.snap.part] = m.snap.data
				if m.snap.err != nil && snapErr == nil {
					snapErr = m.snap.err
				}
				continue
			}
			if err := e.handleMsg(&m); err != nil {
				return fatalError{err}
			}
		}
		if snapErr != nil {
			return snapErr
		}
	}
	coord, err := e.coord.snapshot()
	if err != nil {
		return err
	}
	d.Coord = coord
	d.ResultsOffset = e.opts.Results.Stats(0).EndOffset
	offsets := make([]int64, len(e.parts))
	for i, p := range e.parts {
		offsets[i] = p.offset // safe: the partitions are paused or stopped
	}
	if resume != nil {
		close(resume)
		resume = nil
	}
	size, err := writeCheckpoint(e.opts.CheckpointDir, d)
	if err != nil {
		return err
	}
	e.metrics.ckptBytes.Store(int64(size))
	e.resOff = d.ResultsOffset
	for i, off := range offsets {
		if err := e.opts.Log.Offsets().Commit(e.opts.Group, e.opts.Samples.Name(), i, off); err != nil {
			return fmt.Errorf("rollup: commit offset %d of partition %d: %w", off, i, err)
		}
	}
	e.metrics.ckpts.Inc()
	e.metrics.ckptDur.UpdateDuration(t0)
	return nil
}
