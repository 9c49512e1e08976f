package main

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// The CPU watch reads this process's own time: it grows while the process works.
func TestCPUWatchCountsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: the CPU watch is Linux only")
	}
	w, err := parseCPUWatch("self=" + strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	before := w.sample()
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
	}
	after := w.sample()
	if per := perRequest(before, after, 10); per["self"] <= 0 {
		t.Errorf("CPU per request %v after 200 ms of work: want more than 0", per)
	}
	for _, bad := range []string{"x", "x=", "=1", "x=0", "x=y"} {
		if _, err := parseCPUWatch(bad); err == nil {
			t.Errorf("--cpu-pids %q accepted", bad)
		}
	}
}
