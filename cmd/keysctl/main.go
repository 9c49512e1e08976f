// Keysctl is keyledger's operator CLI: it creates projects and issues admin access tokens,
// and will tail, replay and verify the event stream (CONTRACT section 1).
//
// Run `keysctl help` for the commands and their flags. Exit status: 0 on success, 1 on a
// failure or a failed check, 2 on bad usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ownsRuntime = true
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
