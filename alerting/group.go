package alerting

import (
	"fmt"
	"sort"
	"sync"
	"time"

	amalert "github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/alertmanager/dispatch"
	"github.com/prometheus/common/model"
)

// groupID identifies an aggregation group: the route (its index in the tree) and
// the fingerprint of the group labels.
type groupID struct {
	route int
	fp    model.Fingerprint
}

// aggrGroup is one aggregation group: the alerts of one route with the same values
// of the route's group_by labels. Its timer first fires group_wait after creation
// (at once if its first alert is older than that), then every group_interval; each
// firing flushes the group through the notification stages, exactly as
// Alertmanager's dispatcher does, except that a change resolving the group's last
// firing alert flushes it at once (flushSoon).
type aggrGroup struct {
	p      *Pipeline
	cfg    *Config
	route  *dispatch.Route
	id     groupID
	labels model.LabelSet
	key    string // Alertmanager's group key: "<route key>:<group labels>"

	// flushMu serialises flushes of this group.
	flushMu sync.Mutex

	// mu guards alerts, destroyed and timer.
	mu        sync.Mutex
	alerts    map[model.Fingerprint]*amalert.Alert
	destroyed bool
	stopped   bool
	timer     *time.Timer
}

// routeLocked inserts a into the aggregation groups of every route it matches.
// p.mu must be held.
func (p *Pipeline) routeLocked(a *amalert.Alert, now time.Time) {
	for _, r := range p.cfg.route.Match(a.Labels) {
		labels := groupLabels(a, r)
		id := groupID{route: r.Idx, fp: labels.Fingerprint()}
		if g, ok := p.groups[id]; ok {
			if inserted, resolvedAll := g.insert(a, now); inserted {
				if resolvedAll {
					g.flushSoon()
				}
				continue
			}
		}
		g := &aggrGroup{
			p:      p,
			cfg:    p.cfg,
			route:  r,
			id:     id,
			labels: labels,
			key:    fmt.Sprintf("%s:%s", r.Key(), labels),
			alerts: map[model.Fingerprint]*amalert.Alert{},
		}
		g.insert(a, now)
		p.groups[id] = g
		wait := r.RouteOpts.GroupWait
		if a.StartsAt.Add(wait).Before(now) {
			wait = 0
		}
		g.mu.Lock()
		g.timer = time.AfterFunc(wait, g.tick)
		g.mu.Unlock()
	}
}

// groupLabels picks the alert's labels named in the route's group_by (all of them
// for group_by: ['...']).
func groupLabels(a *amalert.Alert, r *dispatch.Route) model.LabelSet {
	ls := model.LabelSet{}
	for ln, lv := range a.Labels {
		if _, ok := r.RouteOpts.GroupBy[ln]; ok || r.RouteOpts.GroupByAll {
			ls[ln] = lv
		}
	}
	return ls
}

// insert adds or replaces the alert; inserted is false if the group was destroyed
// meanwhile. resolvedAll reports that the insert resolved the group's last firing
// alert: the alert it replaced was firing at now, it is resolved, and no other alert
// of the group is firing.
func (g *aggrGroup) insert(a *amalert.Alert, now time.Time) (inserted, resolvedAll bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.destroyed || g.stopped {
		return false, false
	}
	fp := a.Fingerprint()
	old := g.alerts[fp]
	g.alerts[fp] = a
	if old == nil || old.ResolvedAt(now) || !a.ResolvedAt(now) {
		return true, false
	}
	for ofp, o := range g.alerts {
		if ofp != fp && !o.ResolvedAt(now) {
			return true, false
		}
	}
	return true, true
}

// flushSoon flushes the group at once instead of at its next group_interval: Vigil's
// one deviation from Alertmanager's timers, taken when a group's last firing alert
// resolves, so that the resolve (PagerDuty's resolve of the group's incident) is not
// held back by group_interval. The group's timer then runs group_interval from this
// flush; a group the flush empties is destroyed as usual.
func (g *aggrGroup) flushSoon() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped || g.destroyed || g.timer == nil {
		return
	}
	g.timer.Reset(0)
}

// stop ends the group's timer (on reload and close).
func (g *aggrGroup) stop() {
	g.mu.Lock()
	g.stopped = true
	if g.timer != nil {
		g.timer.Stop()
	}
	g.mu.Unlock()
}

// tick is the timer callback: schedule the next flush group_interval later, then flush.
func (g *aggrGroup) tick() {
	now := time.Now()
	g.mu.Lock()
	if g.stopped || g.destroyed {
		g.mu.Unlock()
		return
	}
	g.timer.Reset(g.route.RouteOpts.GroupInterval)
	g.mu.Unlock()
	g.flush(now)
}

// flush sends a notification for the group's current alerts if the notification
// stages let one through, then deletes the resolved alerts it covered; a group left
// empty is destroyed (the next alert makes a new one, with a new group_wait).
func (g *aggrGroup) flush(now time.Time) {
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	g.mu.Lock()
	if len(g.alerts) == 0 || g.stopped {
		g.mu.Unlock()
		return
	}
	snapshot := make(amalert.AlertSlice, 0, len(g.alerts))
	var resolved []*amalert.Alert
	for _, a := range g.alerts {
		c := *a
		if c.ResolvedAt(now) {
			resolved = append(resolved, a)
		} else {
			// Alerts do not resolve as time moves on within a flush.
			c.EndsAt = time.Time{}
		}
		snapshot = append(snapshot, &c)
	}
	g.mu.Unlock()
	sort.Stable(snapshot)

	if err := g.p.notify(g, snapshot, now); err != nil {
		if g.p.ctx.Err() != nil {
			return // closing
		}
		g.p.log.Error("notify failed; the group is retried at its next flush", "group", g.key, "err", err)
		return
	}

	// Delete the resolved alerts just notified unless they changed meanwhile.
	g.mu.Lock()
	for _, a := range resolved {
		if cur, ok := g.alerts[a.Fingerprint()]; ok && cur.UpdatedAt.Equal(a.UpdatedAt) {
			delete(g.alerts, a.Fingerprint())
		}
	}
	empty := len(g.alerts) == 0
	if empty {
		g.destroyed = true
		g.timer.Stop()
	}
	g.mu.Unlock()
	if empty {
		g.p.mu.Lock()
		if cur, ok := g.p.groups[g.id]; ok && cur == g {
			delete(g.p.groups, g.id)
		}
		g.p.mu.Unlock()
	}
}

// waitFlush returns once a flush of the group that is in progress has finished (it
// takes and releases flushMu, which every flush holds).
func (g *aggrGroup) waitFlush() {
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
}
