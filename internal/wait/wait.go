// Package wait has the one pause that Vigil's retry loops share: a sleep that a
// context cuts short.
package wait

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx is done, whichever comes first, and reports whether
// the whole of d passed (false: ctx ended). It leaves no timer behind.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
