package main

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"

	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/internal/memlimit"
	"github.com/keyledger/keyledger/projections"
)

// The memory of a fold of the whole stream (replay, verify): it keeps every key, about
// projections.FoldBytesPerKey each, and nothing spills to disk. Its limit is, first found:
// --memory, GOMEMLIMIT, the container's memory limit, the memory the machine has available
// when the command starts. A stream whose keys do not fit stops the command with one line
// that names the limit, where it came from and how to raise it (exit 1), before the kernel
// would kill it. docs/performance.md, "Memory of the fold".

const flagMemory = "memory"

// memoryFlag declares --memory on a command that folds the stream.
func memoryFlag(fs *flag.FlagSet) *string {
	return fs.String(flagMemory, "", "the memory the in-memory fold of the stream may use, such as 4GiB or 512MiB (default: GOMEMLIMIT, else the container's limit, else the memory available); a stream whose keys need more stops the command")
}

// foldMemory is a fold's memory limit and where it came from.
type foldMemory struct {
	bytes  int64
	source string
}

// memorySources are what resolveFoldMemory asks, for tests to replace.
type memorySources struct {
	getenv    func(string) string
	container func() (int64, bool)
	available func() (int64, bool)
	// tune sets the Go runtime's GOGC and soft memory limit (nil: leave them).
	tune func(percent int, limit int64)
}

// ownsRuntime is set by main: keysctl tunes the Go runtime only when it is the process, not
// when tests run its commands in theirs.
var ownsRuntime bool

// resolveFoldMemory finds the fold's memory limit (flag: --memory's value, "" when not given)
// and tunes the Go runtime for the fold: unless GOGC or GOMEMLIMIT are set, the heap may grow
// to five times the live one between collections (GOGC=400: the fold's records are most of
// the live heap and every collection marks them all again) under a soft memory limit at the
// fold's limit, so the runtime collects harder as it nears it.
func resolveFoldMemory(command, flag string, src memorySources) (foldMemory, error) {
	var m foldMemory
	switch {
	case flag != "":
		n, err := parseSize(flag)
		if err != nil {
			return m, usagef("%s: --%s %q: %v", command, flagMemory, flag, err)
		}
		m = foldMemory{n, "--" + flagMemory}
	case src.getenv("GOMEMLIMIT") != "" && src.getenv("GOMEMLIMIT") != "off":
		n, err := parseSize(src.getenv("GOMEMLIMIT"))
		if err != nil {
			return m, usagef("%s: GOMEMLIMIT %q: %v", command, src.getenv("GOMEMLIMIT"), err)
		}
		m = foldMemory{n, "GOMEMLIMIT"}
	case src.getenv("GOMEMLIMIT") != "":
		// GOMEMLIMIT=off: no limit.
	default:
		if n, ok := src.container(); ok {
			m = foldMemory{n / 10 * 9, "90% of the container's memory limit"}
		} else if n, ok := src.available(); ok {
			m = foldMemory{n, "the memory available on this machine"}
		}
	}
	src.tuneBulkRead(m.bytes)
	return m, nil
}

// tuneBulkRead tunes the Go runtime of a command that reads the whole stream (replay,
// verify, events tail), unless GOGC or GOMEMLIMIT are set: GOGC=400, under a soft memory
// limit when limit is positive. Reading allocates per message (nats.go's messages, the
// decoded events), and with the default GOGC the collector, and the scavenger returning the
// freed memory to the system, take a fifth of the reader's CPU.
func (src memorySources) tuneBulkRead(limit int64) {
	if src.tune != nil && src.getenv("GOGC") == "" && src.getenv("GOMEMLIMIT") == "" {
		src.tune(400, limit)
	}
}

// config is the fold's configuration for the projections.
func (m foldMemory) config() projections.FoldConfig {
	return projections.FoldConfig{MemoryLimit: m.bytes}
}

// explain turns a fold stopped at its limit into the command's one line: the limit, where it
// came from, what the stream needs, how to raise it.
func (m foldMemory) explain(command string, err error) error {
	var tooLarge *projections.ErrFoldTooLarge
	if !errors.As(err, &tooLarge) {
		return fmt.Errorf("%s: %w", command, err)
	}
	return fmt.Errorf("%s: %w; the limit is %s; nothing was changed; raise the limit with --%s SIZE or GOMEMLIMIT, or run it where more memory is available",
		command, err, m.source, flagMemory)
}

// parseSize reads a size as GOMEMLIMIT writes one: a whole number of bytes with an optional
// unit B, KiB, MiB, GiB or TiB.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	num, shift := s, uint(0)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, shift = strings.TrimSuffix(s, u.suffix), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64>>shift {
		return 0, errors.New("want a positive whole number of bytes with an optional unit B, KiB, MiB, GiB or TiB, such as 4GiB")
	}
	return n << shift, nil
}

// defaultMemorySources are the process's environment and this machine.
func defaultMemorySources(getenv func(string) string) memorySources {
	src := memorySources{getenv: getenv, container: memlimit.Limit, available: memlimit.Available}
	if ownsRuntime {
		src.tune = func(percent int, limit int64) {
			debug.SetGCPercent(percent)
			if limit > 0 {
				debug.SetMemoryLimit(limit)
			}
		}
	}
	return src
}
