// Command keysbench measures keysd under load and compares it with what a user would run
// instead: a CRUD service on one PostgreSQL table (the baseline) and a trivial Go handler (the
// HTTP floor). See docs/performance.md for the figures and the commands that produced them.
//
//	keysbench run             drive one or more scenarios against one target
//	keysbench compare         keysd against the baseline or the floor, interleaved, with ratios
//	keysbench revoke-check    revoke on one keysd, check on another right after: stale accepts
//	keysbench baseline-server serve the CRUD baseline
//	keysbench floor-server    serve the HTTP floor
//	keysbench seed            append many keys straight to the stream
//	keysbench read-stream     read the stream with a plain ordered consumer (the replay ceiling)
//
// Exit status: 0 on success, 1 on a failure, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/eventstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// benchCommand is one keysbench command. Its logic lives in a file of its own: configure
// declares its flags and returns what runs it, which prints its own errors and returns the
// exit status.
type benchCommand struct {
	name      string
	summary   string
	configure func(fs *flag.FlagSet, conn *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int
}

// benchCommands is keysbench, in the order its help lists it.
var benchCommands = []benchCommand{
	{"run", "drive scenarios against one target (keysd, baseline or floor)", runRun},
	{"compare", "keysd against the baseline or the floor, interleaved runs, medians and ratios", runCompare},
	{"revoke-check", "revoke keys on one keysd and check them on another right after the 200: count stale accepts", runRevokeCheck},
	{"baseline-server", "serve the CRUD baseline (one PostgreSQL table, UPDATE ... RETURNING)", runBaselineServer},
	{"floor-server", "serve the HTTP floor (a fixed JSON body)", runFloorServer},
	{"seed", "append keys straight to the stream", runSeed},
	{"read-stream", "read the event stream with a plain ordered consumer: the ceiling of replays", runReadStream},
}

// exitStatus is a command's non-zero exit status; the command has printed why.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

// dispatch runs keysbench with the arguments after the program name and returns the exit
// status: the one dispatcher of keysbench's commands.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var status exitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &status):
		return int(status)
	}
	name := "keysbench"
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	}
	fmt.Fprintf(stderr, "%s: %v (see %s -h)\n", name, err, name)
	return 2
}

// newRoot builds the command tree. How keysbench reaches NATS (run and compare, to create a
// keysd project; seed) is global, as in keysctl.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	conn := &eventstore.ConnectConfig{}
	root := &cobra.Command{
		Use:                "keysbench",
		Short:              "keysbench measures keysd under load and compares it with a CRUD baseline and an HTTP floor",
		SilenceErrors:      true,
		SilenceUsage:       true,
		DisableSuggestions: true,
		TraverseChildren:   true,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Errorf("unknown command %q", args[0])}
			}
			c.SetOut(stderr)
			_ = c.Usage()
			return exitStatus(2)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&conn.URLs, "nats-url", "nats://127.0.0.1:4223", "`URL` of keysd's NATS server(s): run and compare create the project there as keysctl does; seed appends there")
	pf.StringVar(&conn.CredsFile, "nats-creds", "", "`PATH` of a NATS credentials file (user JWT and nkey seed)")
	pf.StringVar(&conn.TLSCA, "nats-tls-ca", "", "`PATH` of the CA certificate(s) to trust for TLS to NATS")
	pf.StringVar(&conn.TLSCert, "nats-tls-cert", "", "`PATH` of a client certificate for mutual TLS to NATS")
	pf.StringVar(&conn.TLSKey, "nats-tls-key", "", "`PATH` of the client certificate's key")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	for _, bc := range benchCommands {
		c := &cobra.Command{
			Use:   bc.name + " [flags]",
			Short: bc.summary,
			Args:  cobra.NoArgs,
		}
		execute := bc.configure(c.Flags(), conn)
		c.RunE = func(c *cobra.Command, _ []string) error {
			if code := execute(c.Context(), c.OutOrStdout(), c.ErrOrStderr()); code != 0 {
				return exitStatus(code)
			}
			return nil
		}
		root.AddCommand(c)
	}
	return root
}
