package logcore

// Status is the JSON body of GET /api/v1/status/log: every topic's partitions and
// every consumer group's committed offsets and lag.
type Status struct {
	Topics    []TopicStatus    `json:"topics"`
	Consumers []ConsumerStatus `json:"consumers"`
}

// TopicStatus is one topic's partitions.
type TopicStatus struct {
	Name       string            `json:"name"`
	Compacted  bool              `json:"compacted"`
	Partitions []PartitionStatus `json:"partitions"`
}

// PartitionStatus is one partition's bounds and size on disk.
type PartitionStatus struct {
	ID          int   `json:"id"`
	StartOffset int64 `json:"start_offset"`
	EndOffset   int64 `json:"end_offset"`
	Bytes       int64 `json:"bytes"`
}

// ConsumerStatus is one consumer group's position in one topic.
type ConsumerStatus struct {
	Group      string                    `json:"group"`
	Topic      string                    `json:"topic"`
	Partitions []ConsumerPartitionStatus `json:"partitions"`
}

// ConsumerPartitionStatus is a group's committed offset in one partition and the
// number of records after it.
type ConsumerPartitionStatus struct {
	ID        int   `json:"id"`
	Committed int64 `json:"committed"`
	Lag       int64 `json:"lag"`
}

// StatusOf returns a snapshot of the log's topics and consumer groups, sorted by name.
func StatusOf(l Log) Status {
	st := Status{Topics: []TopicStatus{}, Consumers: []ConsumerStatus{}}
	byName := map[string]Topic{}
	for _, t := range l.Topics() {
		byName[t.Name()] = t
		ts := TopicStatus{Name: t.Name(), Partitions: make([]PartitionStatus, t.Partitions())}
		if ft, ok := t.(*fileTopic); ok {
			ts.Compacted = ft.config().Compacted
		}
		for p := range ts.Partitions {
			ps := t.Stats(p)
			ts.Partitions[p] = PartitionStatus{ID: p, StartOffset: ps.StartOffset, EndOffset: ps.EndOffset, Bytes: ps.Bytes}
		}
		st.Topics = append(st.Topics, ts)
	}
	off := l.Offsets()
	for _, g := range off.Groups() {
		t := byName[g.Topic]
		if t == nil {
			continue
		}
		cs := ConsumerStatus{Group: g.Group, Topic: g.Topic, Partitions: []ConsumerPartitionStatus{}}
		for p := 0; p < t.Partitions(); p++ {
			committed, ok := off.Committed(g.Group, g.Topic, p)
			ps := t.Stats(p)
			if !ok {
				committed = ps.StartOffset
			}
			cs.Partitions = append(cs.Partitions, ConsumerPartitionStatus{ID: p, Committed: committed, Lag: max(0, ps.EndOffset-max(committed, ps.StartOffset))})
		}
		st.Consumers = append(st.Consumers, cs)
	}
	return st
}
