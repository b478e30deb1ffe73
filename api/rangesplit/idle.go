package rangesplit

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
)

// LoadavgIdleCPUs is an Options.IdleCPUs for Linux: the CPUs (runtime.NumCPU) not
// taken by the threads runnable at this instant, from the count in /proc/loadavg,
// beside the caller's and one more: a query often starts while the previous one's
// garbage collection or response is still running, which is over in moments, and
// counting it would keep an idle machine from splitting. It reads one small file
// (about 10µs). Where that file cannot be read or parsed, every CPU counts as idle.
func LoadavgIdleCPUs() int {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return runtime.NumCPU()
	}
	running, ok := parseLoadavgRunning(b)
	if !ok {
		return runtime.NumCPU()
	}
	// The caller's thread is runnable: it is reading the file.
	return max(runtime.NumCPU()-max(running-2, 0), 0)
}

// parseLoadavgRunning returns the runnable count of /proc/loadavg's content, whose
// fourth field is "runnable/total" ("0.52 0.58 0.59 3/467 12345").
func parseLoadavgRunning(b []byte) (int, bool) {
	f := bytes.Fields(b)
	if len(f) < 4 {
		return 0, false
	}
	r, _, ok := bytes.Cut(f[3], []byte("/"))
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(string(r))
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}
