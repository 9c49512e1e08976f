// Keysbench is keyledger's load generator and benchmark tool. `keysbench seed` fills a
// stream with a large, valid history of key events, for measuring replays.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := 2
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: keysbench seed [flags]")
	} else {
		switch os.Args[1] {
		case "seed":
			code = runSeed(ctx, os.Args[2:], os.Stdout, os.Stderr)
		default:
			fmt.Fprintf(os.Stderr, "keysbench: unknown command %q (have: seed)\n", os.Args[1])
		}
	}
	stop()
	os.Exit(code)
}
