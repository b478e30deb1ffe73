// Package rules evaluates Prometheus rule files: alerting and recording rules in
// Prometheus's format (parsed and validated by the prometheus module's rulefmt), with
// PromQL over the query store, and the alert state machine of Prometheus (pending,
// firing, resolved; for, keep_firing_for; the ALERTS and ALERTS_FOR_STATE series).
//
// Files, one concept each:
//
//	rule.go        the Rule interface and a rule's health and last error
//	alerting.go    AlertingRule: alert instances and their state transitions
//	recording.go   RecordingRule: Prometheus's own, with Vigil's status
//	group.go       Group: evaluation of a group's rules in order, result writes,
//	               staleness markers, state carried over on reload
//	load.go        LoadFiles: rule files to groups
//	manager.go     Manager: reloads, the per-group evaluation loop, evaluation on
//	               arrival, persistence and notification of alerts
//	sched.go       the per-group wake-up for evaluations on arrival
//	state.go       the alert_state topic (its record format is documented there)
//	api.go         the data of GET /api/v1/rules and GET /api/v1/alerts
//	check.go       CheckRuleFiles: promtool check rules
//	unittest.go    RunUnitTests: promtool test rules, evaluated by this package
//
// Evaluation times. A group is evaluated at its slots: the instants
// k*interval + offset, the offset a hash of file and group name (Prometheus's
// EvalTimestamp). Evaluations on arrival happen between slots when new samples of a
// metric the group reads are queryable; each previews the next slot with the data
// there is:
//
//   - new alerts become pending, active from that slot; pending alerts fire at once
//     if their for duration will have passed at that slot;
//   - a firing alert whose series is gone from the result resolves at once (its
//     resolve is persisted, then handed to Notify with EndsAt the arrival time),
//     unless keep_firing_for would still hold it at that slot. Pending alerts that
//     are gone were never sent and are dropped at the slot, as before;
//   - an alert so resolved whose series comes back before the slot fires again at
//     once, as a new firing for the receivers (new StartsAt, sent at once, so
//     PagerDuty gets a new trigger after the resolve), keeping the ActiveAt it had:
//     interval-only evaluation never saw it resolve. The same happens at the slot
//     if it is back only there. If it is still gone at the slot it simply stays
//     resolved there (its resolve is not sent again before the usual re-send).
//
// Nothing is written to storage between slots, and at a slot every alert has the
// state, ActiveAt and keep_firing_for bookkeeping interval-only evaluation gives it,
// so what is written at a slot (recording results, ALERTS, ALERTS_FOR_STATE) equals
// interval-only evaluation: promtool's unit tests, which evaluate at slots only, pass
// unchanged. What differs is only what receivers see between slots: a firing alert
// whose series dips out and back within one interval, which interval-only evaluation
// would not notice, is resolved and triggered again.
//
// Durability. Every change of an alert's state (and every send) is appended to the
// compacted alert_state topic before the alert is handed to Notify, so a restart,
// kill -9 included, restores each alert with its ActiveAt, FiredAt and LastSentAt:
// a pending alert fires at the slot it would have fired at, and a firing alert is not
// sent again as new.
package rules
