package config

import (
	"fmt"
	"time"
)

// LogConfig is the durable log's settings for the samples topic (and the defaults of
// every other topic).
type LogConfig struct {
	// Partitions of the samples topic (flag --partitions); fixed once the topic exists.
	Partitions int `yaml:"partitions"`
	// Fsync is always, interval or never (flag --fsync).
	Fsync string `yaml:"fsync"`
	// FsyncInterval is the sync period with fsync: interval.
	FsyncInterval  Duration `yaml:"fsync_interval"`
	SegmentBytes   ByteSize `yaml:"segment_bytes"`
	SegmentAge     Duration `yaml:"segment_age"`
	RetentionBytes ByteSize `yaml:"retention_bytes"`
	RetentionAge   Duration `yaml:"retention_age"`
	// Compression is the codec of the samples topic's batches: s2 or none.
	Compression string `yaml:"compression"`
}

func defaultLog() LogConfig {
	return LogConfig{
		Partitions:    8,
		Fsync:         "always",
		FsyncInterval: Duration(100 * time.Millisecond),
		SegmentBytes:  128 << 20,
		SegmentAge:    Duration(time.Hour),
		RetentionAge:  Duration(48 * time.Hour),
		Compression:   "s2",
	}
}

func (l *LogConfig) validate() error {
	if l.Partitions < 1 || l.Partitions > 4096 {
		return fmt.Errorf("log.partitions: %d is not between 1 and 4096", l.Partitions)
	}
	switch l.Fsync {
	case "always", "interval", "never":
	default:
		return fmt.Errorf("log.fsync: %q is not always, interval or never", l.Fsync)
	}
	switch l.Compression {
	case "s2", "none":
	default:
		return fmt.Errorf("log.compression: %q is not s2 or none", l.Compression)
	}
	if l.SegmentBytes < 1<<16 {
		return fmt.Errorf("log.segment_bytes: %d is below 64KiB", l.SegmentBytes)
	}
	return nil
}
