package memlimit

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Available returns the memory in bytes the machine has available for a new process now
// (MemAvailable of /proc/meminfo: free memory and the page cache it can reclaim), and false
// when it cannot be read.
func Available() (int64, bool) { return available(os.ReadFile) }

func available(read func(string) ([]byte, error)) (int64, bool) {
	info, err := read("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(info))
	for sc.Scan() {
		// MemAvailable:   21474836 kB
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != "MemAvailable" {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, false
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || n <= 0 {
			return 0, false
		}
		return n << 10, true
	}
	return 0, false
}
