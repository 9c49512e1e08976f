package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// Exit statuses of CONTRACT section 1.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Defaults shared with keysd: its embedded NATS server listens on 127.0.0.1:4223 and it keeps
// the server-side secret at <data-dir>/secret, data-dir ./data.
const (
	defaultNATSURL  = "nats://127.0.0.1:4223"
	defaultDataDir  = "./data"
	secretFileName  = "secret"
	envNATSURL      = "KEYS_NATS_URL"
	envSecretFile   = "KEYS_SECRET_FILE"
	envDataDir      = "KEYS_DATA_DIR"
	envDatabaseURL  = "KEYS_DATABASE_URL"
	flagNATSURL     = "nats-url"
	flagSecretFile  = "secret-file"
	flagDatabaseURL = "database-url"
)

// usageError is a mistake on the command line (unknown command, missing or bad flag): it
// exits with status 2.
type usageError struct {
	msg        string
	command    string // the command whose help to point at; "" for the general usage
	usageShown bool   // the full usage is already on stderr: no need to point at it
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// errHelpShown: help was asked for and printed; the command exits 0.
var errHelpShown = errors.New("help shown")

// settings are the connections a command may need. Each is resolved flag first, then
// environment, then keysd's default.
type settings struct {
	natsURL     string
	secretFile  string
	databaseURL string
}

func defaultSettings(getenv func(string) string) settings {
	s := settings{
		natsURL:     getenv(envNATSURL),
		secretFile:  getenv(envSecretFile),
		databaseURL: getenv(envDatabaseURL),
	}
	if s.natsURL == "" {
		s.natsURL = defaultNATSURL
	}
	switch dataDir := getenv(envDataDir); {
	case s.secretFile != "":
	case dataDir != "":
		s.secretFile = filepath.Join(dataDir, secretFileName)
	default:
		s.secretFile = defaultDataDir + "/" + secretFileName
	}
	return s
}

// uses says which global flags a command reads; only those are accepted after it.
type uses uint8

const (
	usesNATS uses = 1 << iota
	usesSecret
	usesDatabase
)

// register adds the global flags a command uses to its flag set, defaulting to what was
// resolved before the command name.
func (u uses) register(fs *flag.FlagSet, s *settings) {
	if u&usesNATS != 0 {
		fs.StringVar(&s.natsURL, flagNATSURL, s.natsURL, "`URL` of the NATS server(s), comma-separated (env "+envNATSURL+")")
	}
	if u&usesSecret != 0 {
		fs.StringVar(&s.secretFile, flagSecretFile, s.secretFile, "`PATH` of keysd's server-side secret (env "+envSecretFile+")")
	}
	if u&usesDatabase != 0 {
		fs.StringVar(&s.databaseURL, flagDatabaseURL, s.databaseURL, "`URL` of the PostgreSQL read model (env "+envDatabaseURL+")")
	}
}

// invocation is one run of a command: its context, streams and resolved settings.
type invocation struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	settings
}

// command is one entry of the CLI, as listed in CONTRACT section 1.
type command struct {
	path      string   // "projects create"
	synopses  []string // the flags, one line per form of the command
	summary   string
	uses      uses
	configure func(fs *flag.FlagSet) func(*invocation) error
}

// cliCommands is the CLI, in the order `keysctl help` lists it.
var cliCommands = []*command{
	{
		path:      "projects create",
		synopses:  []string{"--name NAME"},
		summary:   `create a project and its secret server key; prints {"project_id": ..., "secret_server_key": ...}`,
		uses:      usesNATS | usesSecret,
		configure: projectsCreate,
	},
	{
		path:      "projects admin-token",
		synopses:  []string{"--project ID --subject WHO [--ttl DURATION]"},
		summary:   "print an admin access token for the x-stack-admin-access-token header (needs only the secret file)",
		uses:      usesSecret,
		configure: projectsAdminToken,
	},
	{
		path:      "events tail",
		synopses:  []string{"[--project ID] [--since RFC3339 | --from-seq N] [--follow]"},
		summary:   "print key events, oldest first, one JSON event per line",
		uses:      usesNATS,
		configure: eventsTail,
	},
	{
		path: "replay",
		synopses: []string{
			"--database-url URL",
			"--database-url URL --until RFC3339 | --until-seq N [--schema NAME]",
		},
		summary:   "rebuild the live PostgreSQL read model from the stream and swap it in atomically; with --until, build it as of then into schema NAME (default keyledger_asof), leaving the live one alone",
		uses:      usesNATS | usesDatabase,
		configure: replay,
	},
	{
		path:      "verify",
		synopses:  []string{"--database-url URL"},
		summary:   "replay the stream in memory and compare it with the read model; exit 1 and the differing key ids when they differ",
		uses:      usesNATS | usesDatabase,
		configure: verify,
	},
	{
		path:      "keys state",
		synopses:  []string{"--project ID --key ID [--at RFC3339]"},
		summary:   "print a key as it was at a time (now by default), from events only",
		uses:      usesNATS,
		configure: keysState,
	},
}

// run executes keysctl with the arguments after the program name and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	err := dispatch(ctx, args, stdout, stderr, getenv)
	var uerr *usageError
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return exitOK
	case errors.As(err, &uerr):
		hint := " (see keysctl help)"
		switch {
		case uerr.usageShown:
			hint = ""
		case uerr.command != "":
			hint = " (see keysctl help " + uerr.command + ")"
		}
		fmt.Fprintf(stderr, "keysctl: %s%s\n", oneLine(err.Error()), hint)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "keysctl: %s\n", oneLine(err.Error()))
		return exitFailure
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cmd, err := dispatchCommand(ctx, args, stdout, stderr, getenv)
	var uerr *usageError
	if cmd != nil && errors.As(err, &uerr) && uerr.command == "" {
		uerr.command = cmd.path
	}
	return err
}

// dispatchCommand runs the command args name, and returns it (nil when there is none).
func dispatchCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) (*command, error) {
	s := defaultSettings(getenv)
	global := flag.NewFlagSet("keysctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	(usesNATS | usesSecret | usesDatabase).register(global, &s)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return nil, errHelpShown
		}
		return nil, usagef("%v", err)
	}
	args = global.Args()
	if len(args) == 0 {
		printUsage(stderr)
		return nil, &usageError{msg: "no command given", usageShown: true}
	}
	if args[0] == "help" {
		return nil, help(stdout, s, args[1:])
	}
	cmd, rest, err := lookup(args)
	if err != nil {
		return nil, err
	}
	fs := flag.NewFlagSet("keysctl "+cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd.uses.register(fs, &s)
	execute := cmd.configure(fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(stdout, cmd, fs)
			return cmd, errHelpShown
		}
		return cmd, usagef("%s: %v", cmd.path, err)
	}
	if fs.NArg() > 0 {
		return cmd, usagef("%s: unexpected argument %q", cmd.path, fs.Arg(0))
	}
	return cmd, execute(&invocation{ctx: ctx, stdout: stdout, stderr: stderr, settings: s})
}

// lookup finds the command named by the first one or two arguments and returns the
// arguments after its name.
func lookup(args []string) (*command, []string, error) {
	var group []string
	for _, c := range cliCommands {
		first, second, _ := strings.Cut(c.path, " ")
		if first != args[0] {
			continue
		}
		if second == "" {
			return c, args[1:], nil
		}
		if len(args) > 1 && args[1] == second {
			return c, args[2:], nil
		}
		group = append(group, second)
	}
	switch {
	case len(group) == 0:
		return nil, nil, usagef("unknown command %q", args[0])
	case len(args) == 1 || strings.HasPrefix(args[1], "-"):
		return nil, nil, usagef("%s needs a subcommand: %s", args[0], strings.Join(group, ", "))
	default:
		return nil, nil, usagef("unknown command %q; %s has: %s", args[0]+" "+args[1], args[0], strings.Join(group, ", "))
	}
}

// help prints the usage, or one command's usage and flags.
func help(w io.Writer, s settings, args []string) error {
	if len(args) == 0 {
		printUsage(w)
		return errHelpShown
	}
	cmd, rest, err := lookup(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("help: unexpected argument %q", rest[0])
	}
	fs := flag.NewFlagSet("keysctl "+cmd.path, flag.ContinueOnError)
	cmd.uses.register(fs, &s)
	if cmd.configure != nil {
		cmd.configure(fs)
	}
	printCommandUsage(w, cmd, fs)
	return errHelpShown
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, "keysctl is keyledger's operator CLI.\n\nUsage:\n  keysctl [global flags] <command> [flags]\n\nCommands:\n")
	for _, c := range cliCommands {
		for _, syn := range c.synopses {
			fmt.Fprintf(w, "  keysctl %s %s\n", c.path, syn)
		}
		fmt.Fprintf(w, "        %s\n", c.summary)
	}
	fmt.Fprint(w, "  keysctl help [command]\n        print this help, or a command's flags\n\n")
	fmt.Fprint(w, "Global flags (before the command, or after it where the command uses them):\n")
	fmt.Fprintf(w, "  --%s URL\n        NATS server(s), comma-separated (env %s; default %s)\n", flagNATSURL, envNATSURL, defaultNATSURL)
	fmt.Fprintf(w, "  --%s PATH\n        keysd's server-side secret (env %s; default $%s/secret, else %s/secret)\n", flagSecretFile, envSecretFile, envDataDir, defaultDataDir)
	fmt.Fprintf(w, "  --%s URL\n        PostgreSQL read model, for replay and verify (env %s)\n\n", flagDatabaseURL, envDatabaseURL)
	fmt.Fprint(w, "Exit status: 0 on success, 1 on a failure or a failed check, 2 on bad usage.\n")
}

func printCommandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprint(w, "Usage:\n")
	for _, syn := range c.synopses {
		fmt.Fprintf(w, "  keysctl %s %s\n", c.path, syn)
	}
	fmt.Fprintf(w, "\n%s.\n", strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.configure == nil {
		fmt.Fprint(w, "Not implemented yet.\n")
		return
	}
	fmt.Fprint(w, "\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// oneLine keeps an error message on one line, as the contract asks of keysctl's errors.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
