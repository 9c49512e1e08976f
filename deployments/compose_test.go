package deployments_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
)

// loadCompose loads a compose file with compose-spec's own loader, validating it against
// the Compose schema (an unknown or misspelt field fails) and its consistency (references to
// undefined services, secrets, configs and volumes fail).
func loadCompose(t *testing.T, file string, content []byte) (*types.Project, error) {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, file), Content: content}},
		Environment: types.Mapping{},
	})
}

// TestComposeLoaderIsStrict: the checks below rely on the loader rejecting what Compose
// would reject.
func TestComposeLoaderIsStrict(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, broken := range map[string]string{
		"unknown service field": strings.Replace(string(b), "  postgres:\n    image:", "  postgres:\n    imagee: x\n    image:", 1),
		"undefined secret":      strings.Replace(string(b), "    - keyledger_secret\n", "    - no_such_secret\n", 1),
	} {
		if broken == string(b) {
			t.Fatalf("%s: the test's edit no longer applies to compose.yaml", name)
		}
		if _, err := loadCompose(t, "compose.yaml", []byte(broken)); err == nil {
			t.Errorf("%s: compose-go loaded it", name)
		}
	}
}

func TestComposeAgreesWithKeysdAndNATS(t *testing.T) {
	k := keysdHelp(t)
	d := readDockerfile(t)
	httpPort := portOf(t, "Dockerfile --http-addr", k.checkArgs(t, "Dockerfile ENTRYPOINT", d.entrypoint[1:])["http-addr"])
	p, err := loadCompose(t, "compose.yaml", nil)
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}

	natsNodes := []string{"nats-1", "nats-2", "nats-3"}
	for _, name := range natsNodes {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("compose.yaml has no service %s", name)
		}
		checkNATSNode(t, p, s)
	}

	pg, ok := p.Services["postgres"]
	if !ok || pg.HealthCheck == nil {
		t.Fatal("compose.yaml: want a postgres service with a healthcheck")
	}

	var keysds []string
	for name, s := range p.Services {
		if s.Build != nil {
			keysds = append(keysds, name)
		}
	}
	slices.Sort(keysds)
	if !slices.Equal(keysds, []string{"keysd-1", "keysd-2"}) {
		t.Fatalf("compose.yaml builds %v, want keysd-1 and keysd-2", keysds)
	}
	published := map[string]bool{}
	for _, name := range keysds {
		s := p.Services[name]
		where := "compose.yaml " + name
		if s.Build.Dockerfile != "deployments/Dockerfile" || filepath.Clean(s.Build.Context) != moduleRoot(t) {
			t.Errorf("%s: builds %s in %s, want deployments/Dockerfile in the repository root", where, s.Build.Dockerfile, s.Build.Context)
		}
		flags := k.checkArgs(t, where+" command", s.Command)
		env := map[string]string{}
		var names []string
		for n, v := range s.Environment {
			names = append(names, n)
			if v != nil {
				env[n] = *v
			}
		}
		k.checkEnv(t, where+" environment", names)
		checkKeysdAccepts(t, where, append(slices.Clone(d.entrypoint[1:]), s.Command...), env)
		if flags["stream-replicas"] != "3" && env["KEYS_STREAM_REPLICAS"] != "3" {
			t.Errorf("%s: want --stream-replicas 3", where)
		}
		// Every NATS node, at its client port.
		nats := flags["nats-url"]
		if nats == "" {
			nats = env["KEYS_NATS_URL"]
		}
		var want []string
		for _, n := range natsNodes {
			want = append(want, n+":4222")
		}
		if got := natsURLs(t, where, nats); !slices.Equal(got, want) {
			t.Errorf("%s: NATS URLs %v, want %v", where, got, want)
		}
		db, err := url.Parse(env["KEYS_DATABASE_URL"])
		if err != nil || db.Hostname() != "postgres" {
			t.Errorf("%s: KEYS_DATABASE_URL %q: want the postgres service (%v)", where, env["KEYS_DATABASE_URL"], err)
		} else if want := pg.Environment["POSTGRES_DB"]; want == nil || strings.TrimPrefix(db.Path, "/") != *want {
			t.Errorf("%s: KEYS_DATABASE_URL names database %s, postgres creates %v", where, db.Path, want)
		}
		// The shared secret: a compose secret, mounted where KEYS_SECRET_FILE points.
		if len(s.Secrets) != 1 {
			t.Fatalf("%s: want exactly the shared secret, got %v", where, s.Secrets)
		}
		secret := s.Secrets[0]
		target := secret.Target
		if target == "" {
			target = "/run/secrets/" + secret.Source
		}
		if env["KEYS_SECRET_FILE"] != target {
			t.Errorf("%s: KEYS_SECRET_FILE %q but the secret is mounted at %s", where, env["KEYS_SECRET_FILE"], target)
		}
		if def, ok := p.Secrets[secret.Source]; !ok || def.File == "" {
			t.Errorf("%s: secret %s is not a file secret", where, secret.Source)
		}
		// Healthcheck: keysd's readiness, on the port its entrypoint listens on.
		if s.HealthCheck == nil || !slices.Contains(s.HealthCheck.Test, fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)) {
			t.Errorf("%s: healthcheck %v: want /readyz on port %d", where, s.HealthCheck, httpPort)
		}
		if len(s.Ports) != 1 || s.Ports[0].Target != uint32(httpPort) || s.Ports[0].HostIP != "127.0.0.1" {
			t.Errorf("%s: ports %+v: want container port %d published on 127.0.0.1", where, s.Ports, httpPort)
		} else if published[s.Ports[0].Published] {
			t.Errorf("%s: host port %s published twice", where, s.Ports[0].Published)
		} else {
			published[s.Ports[0].Published] = true
		}
		for _, dep := range append(slices.Clone(natsNodes), "postgres") {
			if s.DependsOn[dep].Condition != types.ServiceConditionHealthy {
				t.Errorf("%s: want depends_on %s: service_healthy", where, dep)
			}
		}
		if !s.ReadOnly || s.Deploy == nil || s.Deploy.Resources.Limits == nil || s.Deploy.Resources.Limits.MemoryBytes == 0 {
			t.Errorf("%s: want a read-only root and a memory limit", where)
		}
	}
}

// checkNATSNode checks a NATS service of compose.yaml and parses its configuration with the
// pinned nats-server's own parser, as that node would.
func checkNATSNode(t *testing.T, p *types.Project, s types.ServiceConfig) {
	where := "compose.yaml " + s.Name
	// The image runs the nats-server version go.mod pins, the one the tests run.
	if want := "nats:" + strings.TrimPrefix(natsServerVersion(t), "v") + "-alpine"; s.Image != want {
		t.Errorf("%s: image %s, want %s (go.mod's nats-server)", where, s.Image, want)
	}
	if s.HealthCheck == nil || !slices.Contains(s.HealthCheck.Test, "http://127.0.0.1:8222/healthz") {
		t.Errorf("%s: want a healthcheck on the monitoring port's /healthz", where)
	}
	if len(s.Volumes) != 1 || s.Volumes[0].Target != "/data" || s.Volumes[0].Type != types.VolumeTypeVolume {
		t.Errorf("%s: want a named volume at /data, got %+v", where, s.Volumes)
	}
	if len(s.Configs) != 1 {
		t.Fatalf("%s: want one config (nats.conf), got %v", where, s.Configs)
	}
	conf := p.Configs[s.Configs[0].Source]
	if !slices.Contains(s.Command, s.Configs[0].Target) {
		t.Errorf("%s: command %v does not load %s", where, s.Command, s.Configs[0].Target)
	}
	name := s.Environment["NATS_SERVER_NAME"]
	if name == nil || *name != s.Name {
		t.Fatalf("%s: NATS_SERVER_NAME %v, want %s", where, name, s.Name)
	}
	t.Setenv("NATS_SERVER_NAME", *name)
	opts, err := server.ProcessConfigFile(conf.File)
	if err != nil {
		t.Fatalf("%s: %s: %v", where, conf.File, err)
	}
	if opts.ServerName != s.Name || !opts.JetStream || opts.StoreDir != "/data" || opts.Port != 4222 || opts.HTTPPort != 8222 {
		t.Errorf("%s: nats.conf gives name %q, JetStream %v in %q, port %d, monitoring %d", where, opts.ServerName, opts.JetStream, opts.StoreDir, opts.Port, opts.HTTPPort)
	}
	if opts.Cluster.Name == "" || opts.Cluster.Port != 6222 {
		t.Errorf("%s: nats.conf: cluster %q on %d", where, opts.Cluster.Name, opts.Cluster.Port)
	}
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
	}
	if want := []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}; !slices.Equal(routes, want) {
		t.Errorf("%s: nats.conf routes %v, want %v", where, routes, want)
	}
}

// natsServerVersion is the nats-server version go.mod requires.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "github.com/nats-io/nats-server/v2" {
			return f[1]
		}
	}
	t.Fatal("go.mod requires no github.com/nats-io/nats-server/v2")
	return ""
}
