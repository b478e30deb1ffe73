package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	amalert "github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/logcore"
)

// Options configures a Pipeline. Only Config and Log are required; every other zero
// value means the documented default.
type Options struct {
	// Config is the parsed alerting section (ParseSection / ParseConfig).
	Config *Config
	// Log holds the pipeline's durable state in three compacted topics: "outbox"
	// (notifications and the notification log), "silences" and "alerts" (see doc.go).
	Log logcore.Log
	// Metrics receives the vigil_notifications_* metrics; nil makes a private set.
	Metrics *metrics.Set
	// Logger gets delivery errors and warnings; nil discards. Secrets are never logged.
	Logger *slog.Logger
	// ExternalURL is how users reach Vigil (server.external_url): the template
	// .ExternalURL, PagerDuty client_url and a link in every PagerDuty event.
	ExternalURL string
	// GrafanaURL, when set (server.grafana_url), is linked from every PagerDuty event.
	GrafanaURL string
	// HTTPClient, when set, sends every notification (tests); nil gives each
	// integration a client built from its http_config (proxy, TLS, authorization),
	// as Alertmanager does.
	HTTPClient *http.Client
	// RequestTimeout bounds one delivery attempt (default 10s). An integration's own
	// `timeout` setting wins when it is shorter.
	RequestTimeout time.Duration
	// BackoffInitial is the wait after a first failed attempt (default 500ms); it
	// doubles with each failure, with ±20% jitter. A Retry-After header wins when longer.
	BackoffInitial time.Duration
	// BackoffMax caps the backoff (default 1m).
	BackoffMax time.Duration
	// RateLimit is the most events per minute sent to one integration (one PagerDuty
	// routing key or webhook URL); default 120, PagerDuty's limit per routing key.
	RateLimit int
	// BreakerFailures consecutive failed attempts open an integration's circuit
	// breaker (default 5).
	BreakerFailures int
	// BreakerCooldown is how long an open breaker holds attempts back (default 30s);
	// then one attempt probes the receiver.
	BreakerCooldown time.Duration
	// SilenceRetention is how long expired silences are kept (default 120h, as in Alertmanager).
	SilenceRetention time.Duration
	// MaintenanceInterval is how often resolved alerts, expired silences and old
	// notification-log entries are garbage-collected (default 1m).
	MaintenanceInterval time.Duration
}

func (o *Options) setDefaults() {
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.BackoffInitial <= 0 {
		o.BackoffInitial = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = time.Minute
	}
	if o.BackoffMax < o.BackoffInitial {
		o.BackoffMax = o.BackoffInitial
	}
	if o.RateLimit <= 0 {
		o.RateLimit = 120
	}
	if o.BreakerFailures <= 0 {
		o.BreakerFailures = 5
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = 30 * time.Second
	}
	if o.SilenceRetention <= 0 {
		o.SilenceRetention = 120 * time.Hour
	}
	if o.MaintenanceInterval <= 0 {
		o.MaintenanceInterval = time.Minute
	}
}

// Pipeline is the alerting stage: it takes alerts from the rules (Send), routes them
// through the Alertmanager route tree into aggregation groups, flushes each group on
// group_wait / group_interval / repeat_interval with Alertmanager's semantics,
// applies inhibition, time intervals and silences, and writes each notification to
// a durable outbox from which per-integration senders deliver it to PagerDuty or a
// webhook. All methods are safe for concurrent use.
type Pipeline struct {
	opts     Options
	log      *slog.Logger
	metrics  *pipelineMetrics
	silences *Silences
	outbox   *outbox
	store    *alertStore

	// ctx ends at Close: no new flush, attempt or wait starts. hardCtx ends when
	// Close gives up waiting: it aborts attempts in flight.
	ctx        context.Context
	cancel     context.CancelFunc
	hardCtx    context.Context
	hardCancel context.CancelFunc
	wg         sync.WaitGroup

	// mu guards cfg, alerts and groups. Lock order: mu, then a group's mu.
	mu     sync.Mutex
	cfg    *Config
	alerts map[model.Fingerprint]*amalert.Alert
	groups map[groupID]*aggrGroup
	closed bool
}

// New opens (or creates) the pipeline's topics in opts.Log, rebuilds silences, the
// notification log and the pending outbox from them, and starts delivering what is
// pending. Close stops it.
func New(opts Options) (*Pipeline, error) {
	if opts.Config == nil {
		return nil, errors.New("alerting: Options.Config is required")
	}
	if opts.Log == nil {
		return nil, errors.New("alerting: Options.Log is required")
	}
	opts.setDefaults()
	if opts.ExternalURL != "" {
		u, err := url.Parse(opts.ExternalURL)
		if err != nil {
			return nil, fmt.Errorf("alerting: external URL %q: %w", opts.ExternalURL, err)
		}
		opts.Config.tmpl.ExternalURL = u
	}
	p := &Pipeline{
		opts:    opts,
		log:     opts.Logger,
		metrics: newPipelineMetrics(opts.Metrics),
		cfg:     opts.Config,
		alerts:  map[model.Fingerprint]*amalert.Alert{},
		groups:  map[groupID]*aggrGroup{},
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.hardCtx, p.hardCancel = context.WithCancel(context.Background())
	var err error
	var skipped []error
	if p.silences, skipped, err = openSilences(opts.Log, opts.SilenceRetention); err != nil {
		return nil, err
	}
	reportSkipped(p, SilencesTopic, skipped)
	var known map[model.Fingerprint]*amalert.Alert
	if p.store, known, skipped, err = openAlertStore(opts.Log); err != nil {
		return nil, err
	}
	reportSkipped(p, AlertsTopic, skipped)
	// Last: the outbox starts the senders of what is pending.
	if p.outbox, err = openOutbox(p); err != nil {
		return nil, err
	}
	p.outbox.reconfigure(p.cfg)
	now := time.Now()
	p.mu.Lock()
	for fp, a := range known {
		p.alerts[fp] = restored(a, now, p.cfg.resolveTimeout)
		p.routeLocked(p.alerts[fp], now)
	}
	p.mu.Unlock()
	opts.Metrics.GetOrCreateGauge(`vigil_notifications_pending`, func() float64 { return float64(p.outbox.pending()) })
	opts.Metrics.GetOrCreateGauge(`vigil_alerting_groups`, func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(len(p.groups))
	})
	opts.Metrics.GetOrCreateGauge(`vigil_alerting_alerts`, func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(len(p.alerts))
	})
	p.wg.Add(1)
	go p.maintenance()
	return p, nil
}

// Silences is the pipeline's silence store (for the HTTP API).
func (p *Pipeline) Silences() *Silences { return p.silences }

// Send hands alerts to the pipeline: each is merged with what is known of the same
// alert (by label set) as Alertmanager merges alerts posted to it, then routed into
// its aggregation groups. A firing alert (zero EndsAt) resolves by itself at its
// ValidUntil, or global.resolve_timeout after it was sent when that is zero, unless
// sent again. Send never waits for delivery; re-sending an alert is harmless. It
// fails for invalid alerts (each is skipped, the others are taken), when the alerts
// topic cannot be written (the alerts are routed all the same), and after Close.
func (p *Pipeline) Send(ctx context.Context, as []Alert) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("alerting: pipeline is closed")
	}
	var errs []error
	persist := map[model.Fingerprint]*amalert.Alert{}
	for i := range as {
		a, err := p.toAMAlert(&as[i], now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fp := a.Fingerprint()
		old := p.alerts[fp]
		if old != nil {
			// Merge if the activity ranges overlap, as Alertmanager's provider does.
			if (a.EndsAt.After(old.StartsAt) && a.EndsAt.Before(old.EndsAt)) ||
				(a.StartsAt.After(old.StartsAt) && a.StartsAt.Before(old.EndsAt)) {
				a = old.Merge(a)
			}
		}
		if changed(old, a) {
			persist[fp] = a
		}
		p.alerts[fp] = a
		p.metrics.received.Inc()
		p.routeLocked(a, now)
	}
	p.mu.Unlock()
	// Persisted after routing, so that a page does not wait for this write.
	perr := p.store.write(ctx, persist)
	if len(errs) > 0 {
		p.metrics.invalid.Add(len(errs))
		return fmt.Errorf("alerting: %d of %d alerts rejected: %w", len(errs), len(as), errors.Join(append(errs, perr)...))
	}
	return perr
}

// toAMAlert converts a rules alert into Alertmanager's form, as Alertmanager's API
// does on POST /api/v2/alerts: empty labels dropped, StartsAt defaulted, a zero
// EndsAt replaced by ValidUntil (what Prometheus sends as EndsAt of a firing alert)
// or else by now + resolve_timeout with Timeout set.
func (p *Pipeline) toAMAlert(in *Alert, now time.Time) (*amalert.Alert, error) {
	a := &amalert.Alert{UpdatedAt: now}
	a.Labels = make(model.LabelSet, in.Labels.Len())
	in.Labels.Range(func(l labels.Label) {
		if l.Value != "" {
			a.Labels[model.LabelName(l.Name)] = model.LabelValue(l.Value)
		}
	})
	a.Annotations = make(model.LabelSet, in.Annotations.Len())
	in.Annotations.Range(func(l labels.Label) {
		a.Annotations[model.LabelName(l.Name)] = model.LabelValue(l.Value)
	})
	a.StartsAt, a.EndsAt, a.GeneratorURL = in.StartsAt, in.EndsAt, in.GeneratorURL
	if a.StartsAt.IsZero() {
		if a.EndsAt.IsZero() {
			a.StartsAt = now
		} else {
			a.StartsAt = a.EndsAt
		}
	}
	if a.EndsAt.IsZero() {
		if in.ValidUntil.After(now) {
			a.EndsAt = in.ValidUntil
		} else {
			a.Timeout = true
			a.EndsAt = now.Add(p.cfg.resolveTimeout)
		}
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("alert %s: %w", a.Labels, err)
	}
	return a, nil
}

// Reload switches to a new configuration as Alertmanager does: every aggregation
// group is dropped and rebuilt from the known alerts under the new route tree (the
// notification log keeps what was already sent, so nothing is repeated), and the
// senders pick up the new receivers. Notifications already in the outbox are still
// delivered, with their integration's new settings if it still exists, else its old ones.
func (p *Pipeline) Reload(cfg *Config) error {
	if cfg == nil {
		return errors.New("alerting: nil config")
	}
	if p.opts.ExternalURL != "" {
		cfg.tmpl.ExternalURL = p.cfg.tmpl.ExternalURL
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("alerting: pipeline is closed")
	}
	old := p.groups
	p.groups = map[groupID]*aggrGroup{}
	p.cfg = cfg
	for _, g := range old {
		g.stop()
	}
	p.mu.Unlock()
	// Let flushes in progress finish (and log what they sent) before the new groups
	// look at the notification log, so that nothing goes out twice.
	for _, g := range old {
		g.waitFlush()
	}
	p.outbox.reconfigure(cfg)
	p.mu.Lock()
	now := time.Now()
	for _, a := range p.alerts {
		p.routeLocked(a, now)
	}
	p.mu.Unlock()
	return nil
}

// Close stops the groups and the senders: attempts in flight may finish (and be
// recorded as delivered) until ctx ends, then they are aborted. Notifications not
// yet delivered stay in the outbox and are delivered after the next New on the
// same log.
func (p *Pipeline) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, g := range p.groups {
		g.stop()
	}
	p.groups = map[groupID]*aggrGroup{}
	p.mu.Unlock()
	p.outbox.close()
	p.cancel()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.hardCancel()
		return nil
	case <-ctx.Done():
		p.hardCancel()
		<-done
		return fmt.Errorf("alerting: close: %w", ctx.Err())
	}
}

// maintenance garbage-collects alerts resolved and no longer in any group, expired
// silences past their retention, and old notification-log entries.
func (p *Pipeline) maintenance() {
	defer p.wg.Done()
	t := time.NewTicker(p.opts.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case now := <-t.C:
			p.gcAlerts(now)
			if err := p.silences.gc(p.ctx, now); err != nil && p.ctx.Err() == nil {
				p.log.Warn("silence garbage collection", "err", err)
			}
			if err := p.outbox.gcNflog(p.ctx, now); err != nil && p.ctx.Err() == nil {
				p.log.Warn("notification log garbage collection", "err", err)
			}
		}
	}
}

// gcAlerts forgets alerts that resolved more than a resolve_timeout ago and that no
// group holds any more.
func (p *Pipeline) gcAlerts(now time.Time) {
	p.mu.Lock()
	held := map[model.Fingerprint]bool{}
	for _, g := range p.groups {
		g.mu.Lock()
		for fp := range g.alerts {
			held[fp] = true
		}
		g.mu.Unlock()
	}
	forget := map[model.Fingerprint]*amalert.Alert{}
	for fp, a := range p.alerts {
		if a.ResolvedAt(now.Add(-p.cfg.resolveTimeout)) && !held[fp] {
			delete(p.alerts, fp)
			forget[fp] = nil
		}
	}
	p.mu.Unlock()
	if err := p.store.write(p.ctx, forget); err != nil && p.ctx.Err() == nil {
		p.log.Warn("forget resolved alerts", "err", err)
	}
}

// snapshotAlerts returns a copy of the map of known alerts.
func (p *Pipeline) snapshotAlerts() map[model.Fingerprint]*amalert.Alert {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[model.Fingerprint]*amalert.Alert, len(p.alerts))
	for fp, a := range p.alerts {
		m[fp] = a
	}
	return m
}

// inhibitSources collects the inhibiting alerts of cfg's rules at now.
func (p *Pipeline) inhibitSources(cfg *Config, now time.Time) inhibitSources {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sourcesAt(cfg.inhibitors, p.alerts, now)
}
