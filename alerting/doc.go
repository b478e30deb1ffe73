// Package alerting is Vigil's alert pipeline: what Alertmanager does, in process,
// with a durable outbox in front of PagerDuty.
//
// The rules hand alerts to Pipeline.Send. Each alert is merged with the known alert
// of the same label set and routed through the Alertmanager route tree
// (dispatch.Route from Alertmanager's own package, so matchers, continue, group_by
// including '...', and timers inherit exactly as there). Alerts of one route with
// equal group_by labels form an aggregation group, flushed group_wait after it is
// created (at once when its first alert is older than that) and then every
// group_interval, with one deviation from Alertmanager: a change that resolves the
// group's last firing alert flushes it at once, so that a whole group's resolve
// (PagerDuty's resolve of its incident) is not held back by group_interval; partial
// changes wait for group_interval as there. A flush runs Alertmanager's stages in Alertmanager's order:
// inhibition, active_time_intervals, mute_time_intervals, silences, then per
// integration the notification-log check (first notification, new alerts, new
// resolved alerts when send_resolved, all resolved, repeat_interval elapsed). What
// passes is rendered with Alertmanager's templates into a PagerDuty Events API v2
// event or an Alertmanager webhook message and written to the outbox.
//
// # Durable state (three compacted topics of the log, one partition each)
//
// Topic "outbox" holds two kinds of records, told apart by their key:
//
//	key "o\x00<integration>\x00<dedup_key>\x00<seq, 16 hex digits>"
//	    value: a notification as JSON (fields seq, integration, receiver, kind,
//	    group_key, dedup_key, action, created_at, and event (PagerDuty) or body
//	    (webhook)); an empty value (tombstone) records that it was delivered or
//	    given up on.
//	key "n\x00<integration>\x00<group key>"
//	    value: the notification-log entry {"firing":[hash...],"resolved":[hash...],"ts":...}
//	    of the last notification of that group to that integration.
//
// <integration> is "<receiver>/<pagerduty|webhook>/<index>". A flush writes its
// notifications and their notification-log entries in one Append, so after a crash
// either both are there or neither. A sender delivers an integration's notifications
// one at a time in enqueue order, and writes the tombstone after the receiver
// accepted; on start the topic is read from its start to its end and every
// notification without a tombstone is delivered again. A crash between acceptance
// and tombstone repeats that one event with the same dedup_key, which PagerDuty
// folds into the same incident. Records hold no secret: routing keys and webhook
// URLs are read from the configuration at send time (except templated ones, which
// can only be rendered when the event is made).
//
// Topic "silences": key = silence ID, value = the Silence as JSON; a tombstone when
// an expired silence passes its retention.
//
// Topic "alerts": key = the alert's fingerprint (16 hex digits), value = the alert
// as JSON (Alertmanager's fields plus UpdatedAt and Timeout), written when an alert
// appears, starts firing or resolves, or its annotations change (not on plain
// re-sends); a tombstone when it is forgotten. On start the groups are rebuilt from
// it, an alert that was firing staying firing for at least a resolve_timeout.
//
// # Delivery
//
// Each integration has its own sender goroutine, rate limiter (Options.RateLimit
// events a minute, PagerDuty's 120 per routing key by default) and circuit breaker,
// so a slow, dead or throttled receiver delays only its own notifications. 408, 429,
// 5xx and network errors are retried with exponential backoff and ±20% jitter,
// waiting at least Retry-After; other 4xx answers (400: the event will never be
// accepted) are reported and dropped. The PagerDuty dedup_key is Alertmanager's
// (the SHA-256 of the group key), so moving from Alertmanager keeps incidents.
package alerting
