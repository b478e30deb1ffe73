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
// there is and may only move alerts forward (new pending alerts active from that slot,
// pending alerts firing if their for duration will have passed at that slot). Nothing
// resolves and nothing is written to storage between slots, so what is written at a
// slot, and the alert states there, equal interval-only evaluation: promtool's unit
// tests, which evaluate at slots only, pass unchanged.
//
// Durability. Every change of an alert's state (and every send) is appended to the
// compacted alert_state topic before the alert is handed to Notify, so a restart,
// kill -9 included, restores each alert with its ActiveAt, FiredAt and LastSentAt:
// a pending alert fires at the slot it would have fired at, and a firing alert is not
// sent again as new.
package rules
