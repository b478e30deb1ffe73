package rules

// groupSched is a group's wake-up channel for evaluations on arrival: a one-slot
// channel, so that any number of arrivals between two evaluations cost one wake-up.
type groupSched struct {
	wake chan struct{}
}

func (s *groupSched) init() { s.wake = make(chan struct{}, 1) }

// poke asks the group's loop for an evaluation on arrival; it never blocks.
func (s *groupSched) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
