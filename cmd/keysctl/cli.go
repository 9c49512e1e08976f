package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	flag "github.com/spf13/pflag"
)

// Exit statuses of CONTRACT section 1.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Defaults shared with keysd: its embedded NATS server listens on 127.0.0.1:4223 and it keeps
// the server-side secret at <data-dir>/secret, data-dir ./data. The variables are keysd's.
const (
	defaultNATSURL  = "nats://127.0.0.1:4223"
	defaultDataDir  = "./data"
	secretFileName  = "secret"
	envNATSURL      = "KEYS_NATS_URL"
	envNATSCreds    = "KEYS_NATS_CREDS"
	envNATSTLSCA    = "KEYS_NATS_TLS_CA"
	envNATSTLSCert  = "KEYS_NATS_TLS_CERT"
	envNATSTLSKey   = "KEYS_NATS_TLS_KEY"
	envSecretFile   = "KEYS_SECRET_FILE"
	envDataDir      = "KEYS_DATA_DIR"
	envDatabaseURL  = "KEYS_DATABASE_URL"
	flagNATSURL     = "nats-url"
	flagNATSCreds   = "nats-creds"
	flagNATSTLSCA   = "nats-tls-ca"
	flagNATSTLSCert = "nats-tls-cert"
	flagNATSTLSKey  = "nats-tls-key"
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

// failure is an error of a command that ran (exit 1), as opposed to one of the command line.
type failure struct{ err error }

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// settings are the connections a command may need, set by the global flags. Each is
// resolved flag first, then environment, then keysd's default.
type settings struct {
	natsURL     string
	natsCreds   string
	natsTLSCA   string
	natsTLSCert string
	natsTLSKey  string
	secretFile  string
	databaseURL string
	// getenv is the environment they were read from; the commands that fold the stream read
	// the Go runtime's GOGC and GOMEMLIMIT in it.
	getenv func(string) string
}

func defaultSettings(getenv func(string) string) settings {
	s := settings{
		getenv:      getenv,
		natsURL:     getenv(envNATSURL),
		natsCreds:   getenv(envNATSCreds),
		natsTLSCA:   getenv(envNATSTLSCA),
		natsTLSCert: getenv(envNATSTLSCert),
		natsTLSKey:  getenv(envNATSTLSKey),
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

// register adds the global flags, defaulting to the environment's values.
func (s *settings) register(fs *flag.FlagSet) {
	fs.StringVar(&s.natsURL, flagNATSURL, s.natsURL, "`URL` of the NATS server(s), comma-separated; a user and password or a token in it are used (env "+envNATSURL+")")
	fs.StringVar(&s.natsCreds, flagNATSCreds, s.natsCreds, "`PATH` of a NATS credentials file (user JWT and nkey seed) (env "+envNATSCreds+")")
	fs.StringVar(&s.natsTLSCA, flagNATSTLSCA, s.natsTLSCA, "`PATH` of the CA certificate(s) to trust for TLS to NATS (env "+envNATSTLSCA+")")
	fs.StringVar(&s.natsTLSCert, flagNATSTLSCert, s.natsTLSCert, "`PATH` of a client certificate for mutual TLS to NATS, with --"+flagNATSTLSKey+" (env "+envNATSTLSCert+")")
	fs.StringVar(&s.natsTLSKey, flagNATSTLSKey, s.natsTLSKey, "`PATH` of the client certificate's key (env "+envNATSTLSKey+")")
	fs.StringVar(&s.secretFile, flagSecretFile, s.secretFile, "`PATH` of keysd's server-side secret (env "+envSecretFile+", else $"+envDataDir+"/secret)")
	fs.StringVar(&s.databaseURL, flagDatabaseURL, s.databaseURL, "`URL` of the PostgreSQL read model, for replay and verify (env "+envDatabaseURL+")")
}

// invocation is one run of a command: its context, streams and resolved settings.
type invocation struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	settings
}

// command is one entry of the CLI, as listed in CONTRACT section 1. Its logic lives in a file
// of its own; configure declares its flags and returns what runs it.
type command struct {
	path      string   // "projects create"
	synopses  []string // the flags, one line per form of the command
	summary   string
	configure func(fs *flag.FlagSet) func(*invocation) error
}

// cliCommands is the CLI, in the order `keysctl help` lists it.
var cliCommands = []*command{
	{
		path:      "projects create",
		synopses:  []string{"--name NAME"},
		summary:   `create a project and its secret server key; prints {"project_id": ..., "secret_server_key": ...}`,
		configure: projectsCreate,
	},
	{
		path:      "projects admin-token",
		synopses:  []string{"--project ID --subject WHO [--ttl DURATION]"},
		summary:   "print an admin access token for the x-stack-admin-access-token header (needs only the secret file)",
		configure: projectsAdminToken,
	},
	{
		path:      "events tail",
		synopses:  []string{"[--project ID] [--since RFC3339 | --from-seq N] [--follow]"},
		summary:   "print key events, oldest first, one JSON event per line",
		configure: eventsTail,
	},
	{
		path: "replay",
		synopses: []string{
			"--database-url URL",
			"--database-url URL --until RFC3339 | --until-seq N [--schema NAME]",
		},
		summary:   "rebuild the live PostgreSQL read model from the stream and swap it in atomically; with --until, build it as of then into schema NAME (default keyledger_asof), leaving the live one alone",
		configure: replay,
	},
	{
		path:      "verify",
		synopses:  []string{"--database-url URL"},
		summary:   "replay the stream in memory and compare it with the read model; exit 1 and the differing key ids when they differ",
		configure: verify,
	},
	{
		path:      "keys state",
		synopses:  []string{"--project ID --key ID [--at RFC3339]"},
		summary:   "print a key as it was at a time (now by default), from events only",
		configure: keysState,
	},
	{
		path:      "audit-url",
		synopses:  []string{""},
		summary:   "print a NATS URL with read-only credentials for audit consumers of keysd's embedded server (needs only the secret file)",
		configure: auditURL,
	},
}

// run executes keysctl with the arguments after the program name and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	root := newRoot(ctx, stdout, stderr, getenv)
	root.SetArgs(doubleDashed(root, args))
	cmd, err := root.ExecuteC()
	var uerr *usageError
	var ferr *failure
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ferr) && !errors.As(err, &uerr):
		fmt.Fprintf(stderr, "keysctl: %s\n", oneLine(err.Error()))
		return exitFailure
	}
	// Everything else is the command line's fault: ours (usageError) or cobra's and pflag's
	// (unknown command or flag, a flag without its value, a value that does not parse).
	hint := " (see keysctl help)"
	switch {
	case errors.As(err, &uerr) && uerr.usageShown:
		hint = ""
	case errors.As(err, &uerr) && uerr.command != "":
		hint = " (see keysctl help " + uerr.command + ")"
	case cmd != nil && cmd != root && cmd.Name() != "help":
		hint = " (see keysctl help " + strings.TrimPrefix(cmd.CommandPath(), root.Name()+" ") + ")"
	}
	fmt.Fprintf(stderr, "keysctl: %s%s\n", oneLine(err.Error()), hint)
	return exitUsage
}

// newRoot builds the command tree: the global flags are persistent, so they are accepted
// before or after any command.
func newRoot(ctx context.Context, stdout, stderr io.Writer, getenv func(string) string) *cobra.Command {
	s := defaultSettings(getenv)
	root := &cobra.Command{
		Use:                "keysctl",
		Short:              "keyledger's operator CLI",
		SilenceErrors:      true,
		SilenceUsage:       true,
		DisableSuggestions: true,
		// Flags before the command name are parsed by the root, so a bad one is reported as
		// such rather than taken for a command.
		TraverseChildren: true,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			printUsage(stderr, c)
			return &usageError{msg: "no command given", usageShown: true}
		},
	}
	root.SetContext(ctx)
	root.SetOut(stdout)
	root.SetErr(stderr)
	s.register(root.PersistentFlags())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usagef("%v", err) })
	root.SetHelpCommand(helpCommand())

	entries := map[*cobra.Command]*command{}
	defaultHelp := root.HelpFunc()
	root.SetHelpFunc(func(c *cobra.Command, args []string) {
		switch e := entries[c]; {
		case c == root:
			printUsage(c.OutOrStdout(), c)
		case e != nil:
			printCommandUsage(c.OutOrStdout(), e, c)
		default:
			defaultHelp(c, args)
		}
	})

	groups := map[string]*cobra.Command{}
	for _, e := range cliCommands {
		parent := root
		group, name, grouped := strings.Cut(e.path, " ")
		if !grouped {
			name = group
		} else if parent = groups[group]; parent == nil {
			parent = groupCommand(group, subcommandsOf(group))
			groups[group] = parent
			root.AddCommand(parent)
		}
		c := leafCommand(e, name, &s)
		entries[c] = e
		parent.AddCommand(c)
	}
	return root
}

// doubleDashed spells -name as --name for every long flag of the tree, so that the Go flag
// syntax keysctl accepted before it moved to cobra keeps working (-name x, -ttl=1h). A flag's
// value is left as it is, even when it starts with a dash.
func doubleDashed(root *cobra.Command, args []string) []string {
	flags := map[string]*flag.Flag{}
	var collect func(c *cobra.Command)
	collect = func(c *cobra.Command) {
		for _, fs := range []*flag.FlagSet{c.PersistentFlags(), c.Flags()} {
			fs.VisitAll(func(f *flag.Flag) { flags[f.Name] = f })
		}
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	out := make([]string, len(args))
	valueNext := false
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if valueNext {
			valueNext = false
			continue
		}
		name, doubled := strings.CutPrefix(a, "--")
		if !doubled && len(a) > 2 && a[0] == '-' {
			name = a[1:]
		}
		name, _, inline := strings.Cut(name, "=")
		f, ok := flags[name]
		if !ok || len(name) < 2 || !strings.HasPrefix(a, "-") {
			continue
		}
		if !strings.HasPrefix(a, "--") {
			out[i] = "-" + a
		}
		valueNext = !inline && f.NoOptDefVal == ""
	}
	return out
}

// leafCommand wires one entry of cliCommands into cobra.
func leafCommand(e *command, name string, s *settings) *cobra.Command {
	c := &cobra.Command{
		Use:   name + " " + e.synopses[0],
		Short: e.summary,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{msg: fmt.Sprintf("%s: unexpected argument %q", e.path, args[0]), command: e.path}
			}
			return nil
		},
	}
	execute := e.configure(c.Flags())
	c.RunE = func(c *cobra.Command, _ []string) error {
		err := execute(&invocation{ctx: c.Context(), stdout: c.OutOrStdout(), stderr: c.ErrOrStderr(), settings: *s})
		var uerr *usageError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &uerr):
			if uerr.command == "" {
				uerr.command = e.path
			}
			return err
		}
		return &failure{err: err}
	}
	return c
}

// groupCommand is the first word of two-word commands (projects, events, keys): it runs
// nothing itself.
func groupCommand(name string, subcommands []string) *cobra.Command {
	return &cobra.Command{
		Use:   name,
		Short: name + " commands",
		// Flags meant for a subcommand that was not named must not hide that it was not.
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("%s needs a subcommand: %s", name, strings.Join(subcommands, ", "))
			}
			return usagef("unknown command %q; %s has: %s", name+" "+args[0], name, strings.Join(subcommands, ", "))
		},
	}
}

// subcommandsOf lists the subcommands of a group in the order of cliCommands.
func subcommandsOf(group string) []string {
	var names []string
	for _, e := range cliCommands {
		if g, name, ok := strings.Cut(e.path, " "); ok && g == group {
			names = append(names, name)
		}
	}
	return names
}

// helpCommand is `keysctl help [command]`: an unknown command is bad usage, not a help topic.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "print this help, or a command's flags",
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			switch {
			case err != nil:
				return usagef("%v", err)
			case len(rest) > 0 && target.HasSubCommands():
				return usagef("unknown command %q", strings.Join(args, " "))
			case len(rest) > 0:
				return usagef("help: unexpected argument %q", rest[0])
			}
			return target.Help()
		},
	}
}

func printUsage(w io.Writer, root *cobra.Command) {
	fmt.Fprint(w, "keysctl is keyledger's operator CLI.\n\nUsage:\n  keysctl <command> [flags]   (global flags go before or after the command)\n\nCommands:\n")
	for _, c := range cliCommands {
		for _, syn := range c.synopses {
			fmt.Fprintf(w, "  keysctl %s %s\n", c.path, syn)
		}
		fmt.Fprintf(w, "        %s\n", c.summary)
	}
	fmt.Fprint(w, "  keysctl help [command]\n        print this help, or a command's flags\n")
	fmt.Fprint(w, "  keysctl completion bash|zsh|fish|powershell\n        print a shell completion script\n\n")
	fmt.Fprint(w, "Global flags (before or after any command; each reads the variable shown, the flag wins):\n")
	fmt.Fprint(w, root.PersistentFlags().FlagUsages())
	fmt.Fprint(w, "\nExit status: 0 on success, 1 on a failure or a failed check, 2 on bad usage.\n")
}

func printCommandUsage(w io.Writer, e *command, c *cobra.Command) {
	fmt.Fprint(w, "Usage:\n")
	for _, syn := range e.synopses {
		fmt.Fprintf(w, "  keysctl %s %s\n", e.path, syn)
	}
	fmt.Fprintf(w, "\n%s.\n", strings.ToUpper(e.summary[:1])+e.summary[1:])
	fmt.Fprintf(w, "\nFlags:\n%s", c.LocalNonPersistentFlags().FlagUsages())
	fmt.Fprintf(w, "\nGlobal flags:\n%s", c.InheritedFlags().FlagUsages())
}

// oneLine keeps an error message on one line, as the contract asks of keysctl's errors.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
