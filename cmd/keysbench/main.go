// Command keysbench measures keysd under load and compares it with what a user would run
// instead: a CRUD service on one PostgreSQL table (the baseline) and a trivial Go handler (the
// HTTP floor). See docs/performance.md for the figures and the commands that produced them.
//
//	keysbench run             drive one or more scenarios against one target
//	keysbench compare         keysd against the baseline or the floor, interleaved, with ratios
//	keysbench baseline-server serve the CRUD baseline
//	keysbench floor-server    serve the HTTP floor
//	keysbench seed            append many keys straight to the stream
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: keysbench <command> [flags]

commands:
  run              drive scenarios against one target (keysd, baseline or floor)
  compare          keysd against the baseline or the floor, interleaved runs, medians and ratios
  baseline-server  serve the CRUD baseline (one PostgreSQL table, UPDATE ... RETURNING)
  floor-server     serve the HTTP floor (a fixed JSON body)
  seed             append keys straight to the stream

"keysbench <command> -h" lists a command's flags.
`

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runRun(ctx, args[1:], stdout, stderr)
	case "compare":
		return runCompare(ctx, args[1:], stdout, stderr)
	case "baseline-server":
		return runBaselineServer(ctx, args[1:], stdout, stderr)
	case "floor-server":
		return runFloorServer(ctx, args[1:], stdout, stderr)
	case "seed":
		return runSeed(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "keysbench: unknown command %q\n%s", args[0], usage)
	return 2
}
