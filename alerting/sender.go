package alerting

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/vigilhq/vigil/internal/wait"
)

// sender delivers one integration's notifications, one at a time, in the order they
// were enqueued (so in order per dedup_key), through its rate limiter and circuit
// breaker. Each integration has its own sender, so a dead or slow receiver delays
// only its own notifications.
type sender struct {
	o  *outbox
	p  *Pipeline
	id string
	in atomic.Pointer[integration]

	mu    sync.Mutex
	queue []*notification
	wake  chan struct{}

	limiter *rate.Limiter
	breaker breaker
}

func newSender(o *outbox, id string) *sender {
	perMin := o.p.opts.RateLimit
	burst := max(1, perMin/6)
	// burst + a minute's refill never exceeds perMin in any 60s window.
	refill := rate.Limit(float64(max(1, perMin-burst)) / 60)
	return &sender{
		o: o, p: o.p, id: id,
		wake:    make(chan struct{}, 1),
		limiter: rate.NewLimiter(refill, burst),
		breaker: breaker{threshold: o.p.opts.BreakerFailures, cooldown: o.p.opts.BreakerCooldown},
	}
}

// push appends n to the queue. Notifications of one group are pushed in the order
// of their flushes (a group's flushes are serialised), so in order per dedup_key.
func (s *sender) push(n *notification) {
	s.mu.Lock()
	s.queue = append(s.queue, n)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sender) head() *notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	return s.queue[0]
}

// pop removes n, the notification just handled.
func (s *sender) pop(n *notification) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.queue {
		if q == n {
			s.queue = append(s.queue[:i:i], s.queue[i+1:]...)
			return
		}
	}
}

func (s *sender) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

func (s *sender) run() {
	defer s.p.wg.Done()
	ctx := s.p.ctx
	for {
		n := s.head()
		if n == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		if !s.deliver(ctx, n) {
			return
		}
		for {
			err := s.o.done(s.p.hardCtx, n)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.p.log.Error("cannot record delivery; retrying", "integration", s.id, "err", err)
			if !wait.Sleep(ctx, time.Second) {
				return
			}
		}
		s.pop(n)
	}
}

// deliver tries n until it is delivered or given up on (true), or the pipeline
// closes (false: n stays pending in the outbox).
func (s *sender) deliver(ctx context.Context, n *notification) bool {
	for attempt := 0; ; attempt++ {
		in := s.in.Load()
		if in == nil {
			s.p.metrics.dropped(n.Receiver).Inc()
			s.p.log.Error("notification dropped: its integration is no longer configured", "integration", s.id, "group", n.GroupKey)
			return true
		}
		if pause := s.breaker.wait(time.Now()); pause > 0 {
			if !wait.Sleep(ctx, pause) {
				return false
			}
		}
		if err := s.limiter.Wait(ctx); err != nil {
			return false
		}
		timeout := s.p.opts.RequestTimeout
		if t := in.timeout(); t > 0 && t < timeout {
			timeout = t
		}
		actx, cancel := context.WithTimeout(s.p.hardCtx, timeout)
		var err error
		if n.Kind == "pagerduty" {
			err = s.deliverPagerDuty(actx, in, n)
		} else {
			err = s.deliverWebhook(actx, in, n)
		}
		cancel()
		if err == nil {
			s.breaker.success()
			s.p.metrics.sent(n.Receiver).Inc()
			s.p.metrics.latency(n.Receiver).UpdateDuration(n.CreatedAt)
			return true
		}
		if s.p.hardCtx.Err() != nil {
			return false
		}
		s.p.metrics.failed(n.Receiver).Inc()
		var de *deliveryError
		if !errors.As(err, &de) {
			de = &deliveryError{err: err, retry: true}
		}
		if !de.retry {
			s.p.metrics.dropped(n.Receiver).Inc()
			s.p.log.Error("notification rejected by the receiver; giving up", "receiver", n.Receiver, "integration", s.id,
				"action", n.Action, "dedup_key", n.DedupKey, "err", err)
			return true
		}
		s.breaker.failure(time.Now())
		pause := backoff(attempt, s.p.opts.BackoffInitial, s.p.opts.BackoffMax)
		if de.retryAfter > pause {
			pause = de.retryAfter
		}
		s.p.log.Warn("notification failed; retrying", "receiver", n.Receiver, "integration", s.id,
			"attempt", attempt+1, "retry_in", pause, "err", err)
		if !wait.Sleep(ctx, pause) {
			return false
		}
	}
}

// backoff is the wait after the attempt-th failure: initial·2^attempt capped at max,
// with ±20% jitter.
func backoff(attempt int, initial, maxWait time.Duration) time.Duration {
	d := initial
	for i := 0; i < attempt && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	jitter := (rand.Float64()*0.4 - 0.2) * float64(d)
	return d + time.Duration(jitter)
}

// breaker is a per-integration circuit breaker: threshold consecutive failures open
// it for cooldown; then one attempt is let through (half-open), and its outcome
// closes or re-opens it.
type breaker struct {
	threshold int
	cooldown  time.Duration

	mu        sync.Mutex
	failures  int
	openUntil time.Time
}

// wait is how long to wait before the next attempt (0 when closed or half-open).
func (b *breaker) wait(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Before(b.openUntil) {
		return b.openUntil.Sub(now)
	}
	return 0
}

func (b *breaker) success() {
	b.mu.Lock()
	b.failures = 0
	b.openUntil = time.Time{}
	b.mu.Unlock()
}

func (b *breaker) failure(now time.Time) {
	b.mu.Lock()
	b.failures++
	if b.failures >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
	}
	b.mu.Unlock()
}

// client is the HTTP client for in: Options.HTTPClient if set, else in's own.
func (s *sender) client(in *integration) *http.Client {
	if c := s.p.opts.HTTPClient; c != nil {
		return c
	}
	if in.client != nil {
		return in.client
	}
	return http.DefaultClient
}
