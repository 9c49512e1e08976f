package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/user"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/secretfile"
)

// Target kinds: keyledger's keysd, the CRUD baseline, and the HTTP floor.
const (
	kindKeysd    = "keysd"
	kindBaseline = "baseline"
	kindFloor    = "floor"
)

// setupConfig says how to get a project on a target and how many keys to pre-create.
type setupConfig struct {
	Kind string
	// URL is the target's base URL, or several comma-separated (instances of one keysd
	// deployment): keys are created through the first, the load is spread over all.
	URL        string
	NATS       eventstore.ConnectConfig // keysd: where keysctl's logic creates the project
	SecretFile string                   // keysd: the deployment's server-side secret
	ProjectID  string                   // given credentials skip project creation
	ServerKey  string
	Keys       int
}

// prepare creates the target's project (unless given) and its keys.
func prepare(ctx context.Context, name string, c setupConfig) (*target, error) {
	urls := splitURLs(c.URL)
	if len(urls) == 0 {
		return nil, fmt.Errorf("%s: no URL", name)
	}
	t := &target{Name: name, BaseURL: urls[0], ProjectID: c.ProjectID, ServerKey: c.ServerKey}
	if c.Kind == kindBaseline && name == kindBaseline {
		t.Name = baselineName(ctx, t.BaseURL)
	}
	if len(urls) > 1 {
		t.URLs = urls
		t.Name = fmt.Sprintf("%s x%d", t.Name, len(urls))
	}
	if c.Kind == kindFloor {
		// The floor answers every request with the same body; it needs no project or keys,
		// but the scenarios need ids and secrets to put in requests.
		t.ProjectID, t.ServerKey = "00000000-0000-4000-8000-000000000000", "ssk_floor"
		for i := range max(c.Keys, 1) {
			t.Keys = append(t.Keys, floorKey(i))
		}
		return t, nil
	}
	if t.ProjectID == "" {
		var err error
		switch c.Kind {
		case kindKeysd:
			t.ProjectID, t.ServerKey, err = createKeysdProject(ctx, c.NATS, c.SecretFile)
		case kindBaseline:
			t.ProjectID, t.ServerKey, err = createBaselineProject(ctx, t.BaseURL)
		default:
			err = fmt.Errorf("unknown target kind %q", c.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: create project: %w", name, err)
		}
	}
	keys, err := createKeys(ctx, t, c.Keys)
	if err != nil {
		return nil, fmt.Errorf("%s: create keys: %w", name, err)
	}
	t.Keys = keys
	return t, nil
}

// splitURLs reads a comma-separated list of base URLs.
func splitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// baselineName is the baseline's name in reports: its pool size and commit mode, as its
// server reports them.
func baselineName(ctx context.Context, baseURL string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+baselineInfoPath, nil)
	if err != nil {
		return kindBaseline
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return kindBaseline
	}
	defer resp.Body.Close()
	var info baselineInfo
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&info) != nil {
		return kindBaseline
	}
	return fmt.Sprintf("baseline pool %d sync %s", info.MaxConns, info.SynchronousCommit)
}

// floorKey is a well-formed secret for a made-up key id.
func floorKey(i int) benchKey {
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
	secret, _ := domain.FormatSecretKey(id, domain.KeyTypeUser, false, make([]byte, domain.SecretKeyBytes))
	return benchKey{ID: id, Secret: secret}
}

// createKeysdProject does what `keysctl projects create` does: append ProjectCreated with the
// deployment's secret.
func createKeysdProject(ctx context.Context, conn eventstore.ConnectConfig, secretFile string) (string, string, error) {
	secret, _, err := secretfile.LoadOrCreate(secretFile)
	if err != nil {
		return "", "", err
	}
	hasher, err := domain.NewHasher(secret)
	if err != nil {
		return "", "", err
	}
	conn.Name, conn.Timeout = "keysbench", 5*time.Second
	// As keysctl does: keysd's embedded server admits the user whose password the secret
	// derives (used only without credentials of the operator's own; ignored by a server
	// without authentication).
	conn.User, conn.Password = eventstore.EmbeddedUser, hasher.NATSPassword(eventstore.EmbeddedUser)
	nc, err := eventstore.Connect(conn)
	if err != nil {
		return "", "", err
	}
	defer nc.Close()
	store, err := eventstore.Open(ctx, nc, eventstore.Config{EventKey: hasher.EventKey()})
	if err != nil {
		return "", "", err
	}
	h, err := commands.New(store, nil, hasher, commands.Config{})
	if err != nil {
		return "", "", err
	}
	actor := "keysbench"
	if u, err := user.Current(); err == nil && u.Username != "" {
		actor = u.Username
	}
	p, err := h.CreateProject(ctx, domain.Actor{Type: domain.ActorOperator, ID: actor}, "keysbench "+time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return "", "", err
	}
	return p.Project.ID, p.ServerKey, nil
}

type createdProject struct {
	ProjectID       string `json:"project_id"`
	SecretServerKey string `json:"secret_server_key"`
}

func createBaselineProject(ctx context.Context, baseURL string) (string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+baselineProjectsPath, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var p createdProject
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("POST %s: status %d %v", baselineProjectsPath, resp.StatusCode, err)
	}
	return p.ProjectID, p.SecretServerKey, nil
}

// createKeys creates n keys through the API, 16 at a time, and keeps their secrets.
func createKeys(ctx context.Context, t *target, n int) ([]benchKey, error) {
	client := newHTTPClient(16)
	defer client.CloseIdleConnections()
	keys := make([]benchKey, n)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				k, err := createKey(ctx, client, t, i)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				keys[i] = k
				mu.Unlock()
			}
		})
	}
	for i := range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return keys, firstErr
}

func createKey(ctx context.Context, c *http.Client, t *target, i int) (benchKey, error) {
	body := fmt.Sprintf(`{"user_id":"bench-user-%d","description":"bench key %d"}`, i%1000, i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.BaseURL+"/api/v1/user-api-keys", bytes.NewReader([]byte(body)))
	if err != nil {
		return benchKey{}, err
	}
	req.Header.Set("x-stack-project-id", t.ProjectID)
	req.Header.Set("x-stack-secret-server-key", t.ServerKey)
	req.Header.Set("content-type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return benchKey{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return benchKey{}, fmt.Errorf("POST /api/v1/user-api-keys: status %d: %.200s", resp.StatusCode, b)
	}
	var k struct {
		ID    string `json:"id"`
		Value string `json:"value"`
	}
	if err := json.Unmarshal(b, &k); err != nil || k.ID == "" || k.Value == "" {
		return benchKey{}, errors.New("POST /api/v1/user-api-keys: no id and value in the answer")
	}
	return benchKey{ID: k.ID, Secret: k.Value}, nil
}
