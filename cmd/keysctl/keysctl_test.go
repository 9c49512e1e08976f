package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/secretfile"
	"github.com/keyledger/keyledger/internal/testenv"
)

// outcome is what a user sees of one keysctl run.
type outcome struct {
	code           int
	stdout, stderr string
}

// keysctl runs the CLI in process with the given environment (nothing else of the test
// process's environment leaks in).
func keysctl(t *testing.T, env map[string]string, args ...string) outcome {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr, func(k string) string { return env[k] })
	return outcome{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// deployment is a secret file as keysd creates it, and the hasher keysd derives from it.
func deployment(t *testing.T) (path string, hasher *domain.Hasher) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "data", "secret")
	secret, created, err := secretfile.LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("create secret file: created=%v err=%v", created, err)
	}
	hasher, err = domain.NewHasher(secret)
	if err != nil {
		t.Fatal(err)
	}
	return path, hasher
}

// unreachableNATS is a NATS URL where nothing listens.
func unreachableNATS(t *testing.T) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))
}

func (o outcome) wantOneErrorLine(t *testing.T, code int, contains string) {
	t.Helper()
	if o.code != code {
		t.Fatalf("exit status %d, want %d; stderr: %q", o.code, code, o.stderr)
	}
	if o.stdout != "" {
		t.Errorf("stdout %q, want nothing", o.stdout)
	}
	if strings.Count(o.stderr, "\n") != 1 || !strings.HasSuffix(o.stderr, "\n") || !strings.HasPrefix(o.stderr, "keysctl: ") {
		t.Errorf("stderr %q, want one line starting with \"keysctl: \"", o.stderr)
	}
	if !strings.Contains(o.stderr, contains) {
		t.Errorf("stderr %q, want it to mention %q", o.stderr, contains)
	}
}

// createdProjectOf decodes the one JSON object projects create prints.
func createdProjectOf(t *testing.T, o outcome) createdProject {
	t.Helper()
	if o.code != exitOK || o.stderr != "" {
		t.Fatalf("projects create: exit %d, stderr %q", o.code, o.stderr)
	}
	if strings.Count(o.stdout, "\n") != 1 || !strings.HasSuffix(o.stdout, "\n") {
		t.Fatalf("stdout %q, want exactly one line", o.stdout)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(o.stdout), &fields); err != nil {
		t.Fatalf("stdout %q is not a JSON object: %v", o.stdout, err)
	}
	if len(fields) != 2 {
		t.Errorf("stdout %q, want exactly project_id and secret_server_key", o.stdout)
	}
	var p createdProject
	if err := json.Unmarshal([]byte(o.stdout), &p); err != nil {
		t.Fatal(err)
	}
	if id, err := uuid.Parse(p.ProjectID); err != nil || id.String() != p.ProjectID {
		t.Errorf("project_id %q is not a canonical UUID (%v)", p.ProjectID, err)
	}
	if p.SecretServerKey == "" {
		t.Error("secret_server_key is empty")
	}
	return p
}

func TestProjectsCreate(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	secretPath, hasher := deployment(t)

	o := keysctl(t, nil, "projects", "create", "--name", "Acme Inc.", "--nats-url", ns.URL, "--secret-file", secretPath)
	p := createdProjectOf(t, o)

	store, err := eventstore.Open(t.Context(), ns.Connect(t), eventstore.Config{EventKey: hasher.EventKey()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.LoadProject(t.Context(), p.ProjectID)
	if err != nil {
		t.Fatalf("the project is not on the stream: %v", err)
	}
	if got.Name != "Acme Inc." {
		t.Errorf("project name on the stream %q, want %q", got.Name, "Acme Inc.")
	}
	if !hasher.ServerKeyMatches(p.SecretServerKey, got.ServerKeyHash) {
		t.Error("keysd's hasher rejects the printed secret server key against the event's hash")
	}
	if hasher.ServerKeyMatches(p.SecretServerKey+"x", got.ServerKeyHash) {
		t.Error("a different key matches the event's hash")
	}
	_, other := deployment(t)
	if other.ServerKeyMatches(p.SecretServerKey, got.ServerKeyHash) {
		t.Error("the key matches under another deployment's secret")
	}
	if strings.Contains(o.stdout, got.ServerKeyHash) {
		t.Error("the hash was printed")
	}

	var events []domain.Event
	if _, err := store.ReadRange(t.Context(), 0, 0, func(r eventstore.RecordedEvent) error {
		if r.Err != nil {
			return r.Err
		}
		if r.Control {
			return nil
		}
		if strings.Contains(string(r.Raw), p.SecretServerKey) {
			t.Errorf("the secret server key is on the stream: %s", r.Raw)
		}
		events = append(events, r.Event)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Type != domain.TypeProjectCreated {
		t.Fatalf("stream holds %+v, want one ProjectCreated", events)
	}
	if a := events[0].Actor; a.Type != domain.ActorOperator || a.ID == "" {
		t.Errorf("actor %+v, want an operator with an id", a)
	}

	t.Run("each run creates a new project", func(t *testing.T) {
		again := createdProjectOf(t, keysctl(t, nil, "projects", "create", "--name", "Acme Inc.", "--nats-url", ns.URL, "--secret-file", secretPath))
		if again.ProjectID == p.ProjectID || again.SecretServerKey == p.SecretServerKey {
			t.Errorf("second project %+v repeats the first %+v", again, p)
		}
	})
	t.Run("a name the domain rejects is bad usage", func(t *testing.T) {
		for _, name := range []string{"nul\x00byte", "\xff\xfe", strings.Repeat("n", domain.MaxProjectNameChars+1)} {
			o := keysctl(t, nil, "projects", "create", "--name", name, "--nats-url", ns.URL, "--secret-file", secretPath)
			o.wantOneErrorLine(t, exitUsage, "--name")
		}
	})
}

func TestGlobalFlagsAndEnvironment(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	secretPath, _ := deployment(t)
	dataDir := filepath.Dir(secretPath)

	t.Run("flags before the command", func(t *testing.T) {
		createdProjectOf(t, keysctl(t, nil, "--nats-url", ns.URL, "--secret-file", secretPath, "projects", "create", "--name", "a"))
	})
	t.Run("environment", func(t *testing.T) {
		env := map[string]string{envNATSURL: ns.URL, envSecretFile: secretPath}
		createdProjectOf(t, keysctl(t, env, "projects", "create", "--name", "b"))
	})
	t.Run("secret file under KEYS_DATA_DIR, as keysd puts it", func(t *testing.T) {
		env := map[string]string{envNATSURL: ns.URL, envDataDir: dataDir}
		createdProjectOf(t, keysctl(t, env, "projects", "create", "--name", "c"))
	})
	t.Run("flag wins over environment", func(t *testing.T) {
		env := map[string]string{envNATSURL: unreachableNATS(t), envSecretFile: filepath.Join(t.TempDir(), "missing")}
		createdProjectOf(t, keysctl(t, env, "projects", "create", "--name", "d", "--nats-url", ns.URL, "--secret-file", secretPath))
	})
	t.Run("flag after the command wins over flag before it", func(t *testing.T) {
		createdProjectOf(t, keysctl(t, nil, "--nats-url", unreachableNATS(t), "projects", "create", "--name", "e", "--nats-url", ns.URL, "--secret-file", secretPath))
	})
	t.Run("Go flag syntax: one dash, name=value", func(t *testing.T) {
		createdProjectOf(t, keysctl(t, nil, "projects", "create", "-name", "f", "-nats-url="+ns.URL, "-secret-file", secretPath))
	})
	// Every global flag is accepted after every command, whether the command uses it or not.
	everyGlobal := []string{"--nats-url", ns.URL, "--nats-creds", "", "--nats-tls-ca", "", "--nats-tls-cert", "", "--nats-tls-key", "",
		"--secret-file", secretPath, "--database-url", "postgres://nowhere.invalid/x"}
	t.Run("global flags after a command that does not use them", func(t *testing.T) {
		project := uuid.NewString()
		o := keysctl(t, nil, append([]string{"projects", "admin-token", "--project", project, "--subject", "S"}, everyGlobal...)...)
		if o.code != exitOK || o.stderr != "" || !strings.HasPrefix(o.stdout, "kla_") {
			t.Fatalf("admin-token with every global flag after it: exit %d, stdout %q, stderr %q", o.code, o.stdout, o.stderr)
		}
		createdProjectOf(t, keysctl(t, nil, append([]string{"projects", "create", "--name", "g"}, everyGlobal...)...))
		if o := keysctl(t, nil, append([]string{"events", "tail"}, everyGlobal...)...); o.code != exitOK {
			t.Errorf("events tail with every global flag after it: exit %d, stderr %q", o.code, o.stderr)
		}
	})
	t.Run("the TLS and credentials variables are read", func(t *testing.T) {
		env := map[string]string{envNATSURL: ns.URL, envSecretFile: secretPath, envNATSTLSCert: "client.pem"}
		keysctl(t, env, "projects", "create", "--name", "h").wantOneErrorLine(t, exitUsage, "--nats-tls-key")
		env = map[string]string{envNATSURL: ns.URL, envSecretFile: secretPath, envNATSCreds: filepath.Join(t.TempDir(), "missing.creds")}
		keysctl(t, env, "projects", "create", "--name", "h").wantOneErrorLine(t, exitFailure, "missing.creds")
	})
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	for shell, mark := range map[string]string{"bash": "__start_keysctl", "zsh": "#compdef keysctl", "fish": "complete -c keysctl", "powershell": "Register-ArgumentCompleter"} {
		o := keysctl(t, nil, "completion", shell)
		if o.code != exitOK || o.stderr != "" || !strings.Contains(o.stdout, mark) {
			t.Errorf("completion %s: exit %d, stderr %q, script without %q", shell, o.code, o.stderr, mark)
		}
	}
	// What the shell asks for when the user presses tab after "keysctl projects ".
	o := keysctl(t, nil, "__complete", "projects", "")
	if o.code != exitOK || !strings.Contains(o.stdout, "create") || !strings.Contains(o.stdout, "admin-token") {
		t.Errorf("completing \"keysctl projects \": exit %d, stdout %q", o.code, o.stdout)
	}
}

func TestProjectsCreateWithoutSecretFile(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	missing := filepath.Join(t.TempDir(), "data", "secret")
	o := keysctl(t, nil, "projects", "create", "--name", "x", "--nats-url", ns.URL, "--secret-file", missing)
	o.wantOneErrorLine(t, exitFailure, "start keysd first")
	if !strings.Contains(o.stderr, missing) || !strings.Contains(o.stderr, "--secret-file") {
		t.Errorf("stderr %q should name the path and --secret-file", o.stderr)
	}
	if _, err := secretfile.Load(missing); err == nil {
		t.Error("keysctl created a secret file; only keysd may")
	}

	o = keysctl(t, map[string]string{envDataDir: t.TempDir()}, "projects", "admin-token", "--project", uuid.NewString(), "--subject", "ops")
	o.wantOneErrorLine(t, exitFailure, "start keysd first")
}

func TestUnreachableNATS(t *testing.T) {
	t.Parallel()
	secretPath, _ := deployment(t)
	url := unreachableNATS(t)
	o := keysctl(t, nil, "projects", "create", "--name", "x", "--nats-url", url, "--secret-file", secretPath)
	o.wantOneErrorLine(t, exitFailure, "cannot reach NATS at "+url+": is keysd running?")

	t.Run("credentials in the URL are not printed", func(t *testing.T) {
		withPassword := strings.Replace(url, "nats://", "nats://ops:hunter2@", 1)
		o := keysctl(t, nil, "projects", "create", "--name", "x", "--nats-url", withPassword, "--secret-file", secretPath)
		o.wantOneErrorLine(t, exitFailure, "cannot reach NATS")
		if strings.Contains(o.stderr, "hunter2") {
			t.Errorf("stderr %q shows the password", o.stderr)
		}
		withToken := strings.Replace(url, "nats://", "nats://s3cr3tt0ken@", 1)
		o = keysctl(t, nil, "projects", "create", "--name", "x", "--nats-url", withToken, "--secret-file", secretPath)
		o.wantOneErrorLine(t, exitFailure, "cannot reach NATS")
		if strings.Contains(o.stderr, "s3cr3tt0ken") {
			t.Errorf("stderr %q shows the token", o.stderr)
		}
	})
}

func TestProjectsAdminToken(t *testing.T) {
	t.Parallel()
	secretPath, hasher := deployment(t)
	projectID := uuid.NewString()
	// No NATS anywhere: admin-token needs only the secret.
	env := map[string]string{envNATSURL: unreachableNATS(t)}

	issued := time.Now()
	o := keysctl(t, env, "projects", "admin-token", "--project", projectID, "--subject", "alice@example.com", "--secret-file", secretPath)
	if o.code != exitOK || o.stderr != "" {
		t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
	}
	if strings.Count(o.stdout, "\n") != 1 || !strings.HasSuffix(o.stdout, "\n") {
		t.Fatalf("stdout %q, want the token on one line", o.stdout)
	}
	token := strings.TrimSuffix(o.stdout, "\n")

	claims, err := hasher.VerifyAdminToken(token, projectID, time.Now())
	if err != nil {
		t.Fatalf("keysd's hasher rejects the token: %v", err)
	}
	if claims.Subject != "alice@example.com" || claims.ProjectID != projectID {
		t.Errorf("claims %+v", claims)
	}
	if d := claims.ExpiresAt.Sub(issued); d < time.Hour-time.Minute || d > time.Hour+time.Minute {
		t.Errorf("token valid for %s, want the default 1h", d)
	}
	if _, err := hasher.VerifyAdminToken(token, projectID, issued.Add(time.Hour+time.Minute)); !errors.Is(err, domain.ErrTokenExpired) {
		t.Errorf("after 1h: %v, want %v", err, domain.ErrTokenExpired)
	}
	if _, err := hasher.VerifyAdminToken(token, uuid.NewString(), time.Now()); !errors.Is(err, domain.ErrTokenNotAdmin) {
		t.Errorf("another project: %v, want %v", err, domain.ErrTokenNotAdmin)
	}
	_, other := deployment(t)
	if _, err := other.VerifyAdminToken(token, projectID, time.Now()); !errors.Is(err, domain.ErrTokenUnparsable) {
		t.Errorf("another deployment's secret: %v, want %v", err, domain.ErrTokenUnparsable)
	}

	t.Run("ttl", func(t *testing.T) {
		o := keysctl(t, env, "projects", "admin-token", "--project", projectID, "--subject", "bob", "--ttl", "10m", "--secret-file", secretPath)
		claims, err := hasher.VerifyAdminToken(strings.TrimSpace(o.stdout), projectID, time.Now())
		if err != nil {
			t.Fatalf("exit %d, stderr %q: %v", o.code, o.stderr, err)
		}
		if d := claims.ExpiresAt.Sub(claims.IssuedAt); d != 10*time.Minute {
			t.Errorf("token valid for %s, want 10m", d)
		}
	})
	t.Run("project id in any UUID spelling names the same project", func(t *testing.T) {
		o := keysctl(t, env, "projects", "admin-token", "--project", strings.ToUpper(projectID), "--subject", "carol", "--secret-file", secretPath)
		if _, err := hasher.VerifyAdminToken(strings.TrimSpace(o.stdout), projectID, time.Now()); err != nil {
			t.Errorf("exit %d, stderr %q: %v", o.code, o.stderr, err)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	secretPath, _ := deployment(t)
	nowhere := unreachableNATS(t)
	project := uuid.NewString()
	adminToken := func(extra ...string) []string {
		return append([]string{"projects", "admin-token", "--secret-file", secretPath}, extra...)
	}
	create := func(extra ...string) []string {
		return append([]string{"projects", "create", "--secret-file", secretPath, "--nats-url", nowhere}, extra...)
	}
	for _, tc := range []struct {
		args    []string
		mention string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"--bogus", "projects", "create", "--name", "x"}, "-bogus"},
		{[]string{"projects"}, "projects needs a subcommand: create, admin-token"},
		{[]string{"projects", "--name", "x"}, "projects needs a subcommand"},
		{[]string{"projects", "delete"}, `unknown command "projects delete"`},
		{[]string{"events"}, "events needs a subcommand: tail"},
		{[]string{"help", "bogus"}, `unknown command "bogus"`},
		{create(), "--name is required"},
		{create("--name"), "flag needs an argument"},
		{create("--name", ""), "--name is required"},
		{create("--name", "x", "--bogus"), "-bogus"},
		{create("--name", "x", "extra"), `unexpected argument "extra"`},
		{create("--name", "x", "--nats-url", "http://127.0.0.1:4223"), "scheme must be nats"},
		{create("--name", "x", "--nats-url", "nats://"), "is not a NATS URL"},
		{adminToken("--subject", "ops"), "--project is required"},
		{adminToken("--project", project), "--subject is required"},
		{adminToken("--project", "not-a-uuid", "--subject", "ops"), "is not a project id"},
		{adminToken("--project", project, "--subject", "ops", "--ttl", "abc"), `invalid argument "abc" for "--ttl"`},
		{adminToken("--project", project, "--subject", "ops", "--ttl", "0s"), "--ttl must be positive"},
		{adminToken("--project", project, "--subject", "ops", "--ttl", "-1h"), "--ttl must be positive"},
		{adminToken("--project", project, "--subject", "ops\n"), "--subject"},
		{create("--name", "x", "--nats-tls-cert", "c.pem"), "--nats-tls-key"},
		{create("--name", "x", "--nats-url", "nats://ops:hunter2@127.0.0.1:4223,http://ops:hunter2@h:1"), `"http://ops:xxxxx@h:1": scheme must be nats`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			keysctl(t, nil, tc.args...).wantOneErrorLine(t, exitUsage, tc.mention)
		})
	}

	t.Run("no command", func(t *testing.T) {
		o := keysctl(t, nil)
		if o.code != exitUsage || o.stdout != "" {
			t.Fatalf("exit %d, stdout %q", o.code, o.stdout)
		}
		if !strings.Contains(o.stderr, "projects create --name NAME") || !strings.HasSuffix(o.stderr, "keysctl: no command given\n") {
			t.Errorf("stderr %q, want the usage then one error line", o.stderr)
		}
	})
}

// contractCommands are the synopses of CONTRACT section 1, which the usage lists.
var contractCommands = []string{
	"keysctl projects create --name NAME",
	"keysctl projects admin-token --project ID --subject WHO [--ttl DURATION]",
	"keysctl events tail [--project ID] [--since RFC3339 | --from-seq N] [--follow]",
	"keysctl replay --database-url URL\n",
	"keysctl replay --database-url URL --until RFC3339 | --until-seq N [--schema NAME]",
	"keysctl verify --database-url URL",
	"keysctl keys state --project ID --key ID [--at RFC3339]",
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"--nats-url", "nats://x:1", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			o := keysctl(t, nil, args...)
			if o.code != exitOK || o.stderr != "" {
				t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
			}
			for _, c := range contractCommands {
				if !strings.Contains(o.stdout, c) {
					t.Errorf("usage does not list %q:\n%s", c, o.stdout)
				}
			}
			for _, f := range []string{"--nats-url", "--secret-file", "--database-url", envNATSURL, envSecretFile, envDatabaseURL} {
				if !strings.Contains(o.stdout, f) {
					t.Errorf("usage does not mention %s", f)
				}
			}
		})
	}
	for _, tc := range []struct {
		args     []string
		mentions []string
	}{
		{[]string{"help", "projects", "create"}, []string{"-name NAME", "-nats-url", "-secret-file"}},
		{[]string{"projects", "create", "-h"}, []string{"-name NAME", "-nats-url", "-secret-file"}},
		{[]string{"projects", "admin-token", "--help"}, []string{"-project ID", "-subject WHO", "-ttl DURATION", "(default 1h0m0s)"}},
		{[]string{"help", "replay"}, []string{"replay --database-url URL", "-until RFC3339", "-until-seq N", "-schema NAME", "-database-url"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o := keysctl(t, nil, tc.args...)
			if o.code != exitOK || o.stderr != "" {
				t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(o.stdout, m) {
					t.Errorf("help does not mention %q:\n%s", m, o.stdout)
				}
			}
		})
	}
}

// TestBinary runs the built keysctl as an operator would, for what only a process shows:
// exit statuses and the streams they go to.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "./cmd/keysctl")
	ns := testenv.NATS(t)
	secretPath, hasher := deployment(t)

	runBinary := func(t *testing.T, args ...string) outcome {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatalf("run keysctl: %v", err)
		}
		return outcome{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	}

	p := createdProjectOf(t, runBinary(t, "projects", "create", "--name", "from the binary", "--nats-url", ns.URL, "--secret-file", secretPath))
	o := runBinary(t, "projects", "admin-token", "--project", p.ProjectID, "--subject", "ops", "--secret-file", secretPath)
	if _, err := hasher.VerifyAdminToken(strings.TrimSpace(o.stdout), p.ProjectID, time.Now()); o.code != exitOK || err != nil {
		t.Errorf("admin-token: exit %d, stderr %q, verify: %v", o.code, o.stderr, err)
	}
	if o := runBinary(t, "help"); o.code != exitOK || !strings.Contains(o.stdout, contractCommands[0]) {
		t.Errorf("help: exit %d, stdout %q", o.code, o.stdout)
	}
	runBinary(t, "projects", "create").wantOneErrorLine(t, exitUsage, "--name is required")
	runBinary(t, "nonsense").wantOneErrorLine(t, exitUsage, "unknown command")
	url := unreachableNATS(t)
	runBinary(t, "projects", "create", "--name", "x", "--nats-url", url, "--secret-file", secretPath).
		wantOneErrorLine(t, exitFailure, "cannot reach NATS at "+url+": is keysd running?")
	runBinary(t, "events", "tail", "--nats-url", url).wantOneErrorLine(t, exitFailure, "cannot reach NATS at "+url)
}
