package logcore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// offsetStore keeps consumer-group offsets in the internal compacted topic
// __consumer_offsets (one partition, always synced): the record key is
// "group\x00topic\x00partition", the value the committed offset as 8 bytes little
// endian. The latest record per key wins; the whole topic is read at open.
type offsetStore struct {
	log   *FileLog
	topic *fileTopic

	mu        sync.RWMutex
	committed map[offsetKey]int64
}

type offsetKey struct {
	group, topic string
	partition    int
}

func (k offsetKey) bytes() []byte {
	return []byte(k.group + "\x00" + k.topic + "\x00" + strconv.Itoa(k.partition))
}

func parseOffsetKey(b []byte) (offsetKey, bool) {
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 {
		return offsetKey{}, false
	}
	p, err := strconv.Atoi(parts[2])
	if err != nil || p < 0 {
		return offsetKey{}, false
	}
	return offsetKey{parts[0], parts[1], p}, true
}

func loadOffsetStore(l *FileLog, t *fileTopic) (*offsetStore, error) {
	s := &offsetStore{log: l, topic: t, committed: map[offsetKey]int64{}}
	pt := t.parts[0]
	off := pt.stats().StartOffset
	var recs []Record
	var buf []byte
	for {
		var next int64
		var err error
		recs, buf, next, err = pt.read(off, 0, recs, buf)
		if errors.Is(err, ErrCorrupt) {
			// Damage must not make the whole log unopenable: skip to the next good
			// batch. Groups whose last commit was in the damage resume from an older
			// one (records are read again, never skipped).
			skip := pt.skipDamage(off)
			l.opts.Logger.Error("skipping damaged consumer offsets", "from", off, "to", skip, "err", err)
			off = skip
			if off >= pt.stats().EndOffset {
				break
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read consumer offsets: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			k, ok := parseOffsetKey(r.Key)
			if !ok || (len(r.Value) != 8 && len(r.Value) != 0) {
				l.opts.Logger.Warn("ignoring a bad consumer offset record", "offset", r.Offset)
				continue
			}
			if len(r.Value) == 0 {
				delete(s.committed, k)
				continue
			}
			s.committed[k] = int64(binary.LittleEndian.Uint64(r.Value))
		}
		off = next
	}
	for k := range s.committed {
		s.registerLag(k)
	}
	return s, nil
}

// Commit durably records that group has processed topic's partition p up to, not
// including, offset. It returns after the commit is synced.
func (s *offsetStore) Commit(group, topic string, p int, offset int64) error {
	if group == "" || strings.ContainsRune(group, 0) {
		return fmt.Errorf("commit offset: bad group name %q", group)
	}
	k := offsetKey{group, topic, p}
	var v [8]byte
	binary.LittleEndian.PutUint64(v[:], uint64(offset))
	if _, err := s.topic.Append(context.Background(), 0, []Record{{Key: k.bytes(), Value: v[:]}}); err != nil {
		return fmt.Errorf("commit offset %d of group %s for %s/%d: %w", offset, group, topic, p, err)
	}
	s.mu.Lock()
	_, had := s.committed[k]
	s.committed[k] = offset
	s.mu.Unlock()
	if !had {
		s.registerLag(k)
	}
	return nil
}

// Committed returns the offset last committed, and false if there is none.
func (s *offsetStore) Committed(group, topic string, p int) (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	off, ok := s.committed[offsetKey{group, topic, p}]
	return off, ok
}

// Groups lists every (group, topic) pair with a commit, sorted.
func (s *offsetStore) Groups() []GroupTopic {
	s.mu.RLock()
	seen := map[GroupTopic]bool{}
	for k := range s.committed {
		seen[GroupTopic{k.group, k.topic}] = true
	}
	s.mu.RUnlock()
	out := make([]GroupTopic, 0, len(seen))
	for g := range seen {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Topic < out[j].Topic
	})
	return out
}

// lag returns how many records of the partition lie at or after the committed offset.
func (s *offsetStore) lag(k offsetKey) (committed, lag int64) {
	committed, _ = s.Committed(k.group, k.topic, k.partition)
	s.log.mu.Lock()
	t := s.log.topics[k.topic]
	s.log.mu.Unlock()
	if t == nil {
		return committed, 0
	}
	st := t.Stats(k.partition)
	return committed, max(0, st.EndOffset-max(committed, st.StartOffset))
}

// registerLag exposes vigil_log_consumer_lag for k, computed at scrape time.
func (s *offsetStore) registerLag(k offsetKey) {
	name := fmt.Sprintf(`vigil_log_consumer_lag{group=%q,topic=%q,partition="%d"}`, k.group, k.topic, k.partition)
	s.log.metrics.set.GetOrCreateGauge(name, func() float64 {
		_, lag := s.lag(k)
		return float64(lag)
	})
}
