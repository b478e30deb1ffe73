package config

import (
	"errors"
	"fmt"
)

// NATSConfig is the NATS side: the embedded server (when URL is empty) and the
// subscriptions that ingest metrics.
type NATSConfig struct {
	// URL of an external NATS server (flag --nats-url). Empty starts the embedded server.
	URL string `yaml:"url"`
	// Listen is the embedded server's client address (flag --nats-listen).
	Listen string `yaml:"listen"`
	// CredentialsFile authenticates to an external server (NATS .creds file).
	CredentialsFile string `yaml:"credentials_file"`
	// Subjects are the core-NATS subjects consumed, in a queue group.
	Subjects []string `yaml:"subjects"`
	// QueueGroup lets several Vigils share the subjects.
	QueueGroup string `yaml:"queue_group"`
	// Formats maps a subject pattern (NATS wildcards * and >) to a payload format
	// ("json" or "influx"); a message's Content-Type header wins; without either, a
	// payload starting with { or [ is JSON and anything else Influx line protocol.
	Formats map[string]string `yaml:"formats"`
	// DeadLetterSubject receives bad messages with their error.
	DeadLetterSubject string `yaml:"deadletter_subject"`
	// JetStream, when Stream is set, pull-consumes that stream with explicit acks.
	JetStream JetStreamConfig `yaml:"jetstream"`
}

// JetStreamConfig is durable consumption from a JetStream stream.
type JetStreamConfig struct {
	Stream      string `yaml:"stream"`
	Consumer    string `yaml:"consumer"`
	MaxInFlight int    `yaml:"max_in_flight"`
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait Duration `yaml:"ack_wait"`
}

func defaultNATS() NATSConfig {
	return NATSConfig{
		Listen:            "127.0.0.1:4222",
		Subjects:          []string{"metrics.>"},
		QueueGroup:        "vigil",
		DeadLetterSubject: "vigil.deadletter",
		JetStream:         JetStreamConfig{Consumer: "vigil", MaxInFlight: 1024, AckWait: Duration(30e9)},
	}
}

func (n *NATSConfig) validate() error {
	if n.URL == "" && n.Listen == "" {
		return errors.New("nats: set url (external server) or listen (embedded server)")
	}
	for pat, f := range n.Formats {
		if f != "json" && f != "influx" {
			return fmt.Errorf("nats.formats[%q]: format %q is not json or influx", pat, f)
		}
	}
	if n.JetStream.MaxInFlight <= 0 {
		return errors.New("nats.jetstream.max_in_flight: must be positive")
	}
	return nil
}
