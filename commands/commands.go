// Package commands is keyledger's write side: each command loads the aggregate's state,
// lets the domain decide, and appends the resulting events, retrying on a concurrency
// conflict a bounded number of times. The retry lives in one place, updateKey.
package commands

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// ErrContention: the command lost the optimistic-concurrency race on every attempt. Retrying
// the same request later is safe.
var ErrContention = errors.New("too many concurrent changes to this key; retry")

// ErrKeyBusy: the command gave up waiting for the earlier commands on the same key in this
// process (keyLocks) before its own turn came. Nothing was appended; retrying later is safe.
var ErrKeyBusy = errors.New("timed out waiting for earlier changes of this key")

// KeyStates is the process's index of key states (projections.KeyIndex, handed over by
// internal/service): where a command starts from, and where it leaves the state it wrote.
type KeyStates interface {
	// KeyState returns a key's last known state and the stream sequence of its last event. It
	// may be stale (the append's concurrency check catches that) and may not know a key yet
	// (domain.ErrKeyNotFound: the store is asked then).
	KeyState(ctx context.Context, projectID, keyID string) (domain.KeySnapshot, uint64, error)
	// Remember records the state of a key after events this process appended or loaded from
	// the store, seq being the stream sequence of the key's last message, and createdSeq that
	// of its creation when known (else 0). A state older than the one held is ignored.
	Remember(key domain.KeySnapshot, seq, createdSeq uint64)
}

// Config configures the command handler.
type Config struct {
	// MaxAttempts bounds the load-decide-append attempts of one command. Default 8.
	MaxAttempts int
	// Clock is the time source for events. Default time.Now.
	Clock func() time.Time
	// Random is the source of secret bytes. Default crypto/rand.
	Random io.Reader
	// Timeout bounds one command on one key, waiting for earlier commands on it included.
	// Default 10 seconds.
	Timeout time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 8
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Random == nil {
		c.Random = crand.Reader
	}
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	if c.MaxAttempts < 1 {
		return fmt.Errorf("max attempts must be at least 1, got %d", c.MaxAttempts)
	}
	return nil
}

// Handler executes commands against the event store.
type Handler struct {
	store  *eventstore.Store
	states KeyStates
	hasher *domain.Hasher
	cfg    Config
	locks  *keyLocks
}

// New returns a command handler. states may be nil: state is then always loaded from the
// event store.
func New(store *eventstore.Store, states KeyStates, hasher *domain.Hasher, cfg Config) (*Handler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Handler{store: store, states: states, hasher: hasher, cfg: cfg, locks: newKeyLocks()}, nil
}

// remember hands a key's state to the index, if there is one.
func (h *Handler) remember(key domain.KeySnapshot, seq, createdSeq uint64) {
	if h.states != nil {
		h.states.Remember(key, seq, createdSeq)
	}
}

// Caller is who issues a command and in which request.
type Caller struct {
	ProjectID string
	Actor     domain.Actor
	RequestID string
}

func (h *Handler) meta(c Caller) domain.Meta {
	return domain.Meta{Time: h.cfg.Clock(), Actor: c.Actor, RequestID: c.RequestID, NewID: newEventID}
}

func newEventID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// Result is a command's outcome: the aggregate's state after it, and the stream sequence a
// reader must have reached to see that state (read-your-writes).
type Result struct {
	Key domain.KeySnapshot
	Seq uint64
}

// NewKey is a request to issue a key: a user's (UserID) or a team's (TeamID).
type NewKey struct {
	UserID      string
	TeamID      string
	Description string
	ExpiresAt   *time.Time
	IsPublic    bool
}

// CreatedKey is a new key with its secret, which exists only in this value.
type CreatedKey struct {
	Result
	Secret string
}

// CreateKey issues a new key for a user or a team of the caller's project.
func (h *Handler) CreateKey(ctx context.Context, c Caller, k NewKey) (CreatedKey, error) {
	keyID := uuid.NewString()
	random := make([]byte, domain.SecretKeyBytes)
	if _, err := io.ReadFull(h.cfg.Random, random); err != nil {
		return CreatedKey{}, fmt.Errorf("create key: random: %w", err)
	}
	typ := domain.KeyTypeUser
	if k.TeamID != "" {
		typ = domain.KeyTypeTeam
	}
	secret, err := domain.FormatSecretKey(keyID, typ, k.IsPublic, random)
	if err != nil {
		return CreatedKey{}, fmt.Errorf("create key: %w", err)
	}
	e, err := domain.DecideCreateKey(domain.CreateKey{
		ProjectID: c.ProjectID, KeyID: keyID, UserID: k.UserID, TeamID: k.TeamID, Description: k.Description,
		ExpiresAt: k.ExpiresAt, IsPublic: k.IsPublic,
		SecretHash: h.hasher.HashSecretKey(secret), LastFour: domain.LastFour(secret),
	}, h.meta(c))
	if err != nil {
		return CreatedKey{}, err
	}
	seq, err := h.store.AppendKeyEvents(ctx, 0, []domain.Event{e})
	if err != nil {
		if errors.Is(err, eventstore.ErrConflict) {
			return CreatedKey{}, fmt.Errorf("create key %s: %w", keyID, domain.ErrKeyExists)
		}
		return CreatedKey{}, fmt.Errorf("create key: %w", err)
	}
	key, err := domain.EvolveKey(nil, e)
	if err != nil {
		return CreatedKey{}, err
	}
	h.remember(key.Snapshot(), seq, seq)
	return CreatedKey{Result: Result{Key: key.Snapshot(), Seq: seq}, Secret: secret}, nil
}

// UpdateKey applies the seed page's PATCH to one key of the caller's project.
func (h *Handler) UpdateKey(ctx context.Context, c Caller, keyID string, u domain.UpdateKey) (Result, error) {
	return h.updateKey(ctx, c, keyID, func(k *domain.Key, m domain.Meta) ([]domain.Event, error) {
		return k.DecideUpdate(u, m)
	})
}

// RotateKey replaces a key of the caller's project by a new one for the same owner and
// description, and makes the old one expire after grace unless it expires sooner
// (domain.DecideRotate). Both are appended at once, on the old key's current state. typ is
// the type of key the request addresses: a key of the other type is not found.
func (h *Handler) RotateKey(ctx context.Context, c Caller, typ domain.KeyType, keyID string, grace time.Duration) (CreatedKey, error) {
	newID := uuid.NewString()
	var secret string
	var created domain.Event
	res, err := h.updateKey(ctx, c, keyID, func(k *domain.Key, m domain.Meta) ([]domain.Event, error) {
		if secret == "" {
			random := make([]byte, domain.SecretKeyBytes)
			if _, err := io.ReadFull(h.cfg.Random, random); err != nil {
				return nil, fmt.Errorf("random: %w", err)
			}
			var err error
			if secret, err = domain.FormatSecretKey(newID, k.Type(), k.Snapshot().IsPublic, random); err != nil {
				return nil, err
			}
		}
		events, err := k.DecideRotate(domain.RotateKey{
			NewKeyID: newID, Grace: grace, Type: typ,
			SecretHash: h.hasher.HashSecretKey(secret), LastFour: domain.LastFour(secret),
		}, m)
		if err == nil {
			created = events[len(events)-1]
		}
		return events, err
	})
	if err != nil {
		return CreatedKey{}, fmt.Errorf("rotate: %w", err)
	}
	key, err := domain.EvolveKey(nil, created)
	if err != nil {
		return CreatedKey{}, err
	}
	h.remember(key.Snapshot(), res.Seq, res.Seq) // the rotation's last event creates it
	return CreatedKey{Result: Result{Key: key.Snapshot(), Seq: res.Seq}, Secret: secret}, nil
}

// updateKey is load -> decide -> append, retried on a concurrency conflict. The first load
// comes from the cache; after a conflict the event store is the source of truth.
func (h *Handler) updateKey(ctx context.Context, c Caller, keyID string,
	decide func(*domain.Key, domain.Meta) ([]domain.Event, error)) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	unlock, err := h.locks.lock(ctx, c.ProjectID, keyID)
	if err != nil {
		return Result{}, fmt.Errorf("update key %s: %w", keyID, err)
	}
	defer unlock()
	from := fromIndex
	if h.states == nil {
		from = fromStore
	}
	for attempt := 1; ; attempt++ {
		key, seq, err := h.load(ctx, c.ProjectID, keyID, from)
		if err != nil {
			return Result{}, err
		}
		events, err := decide(key, h.meta(c))
		if err != nil {
			return Result{}, fmt.Errorf("update key %s: %w", keyID, err)
		}
		if len(events) == 0 {
			if from != fromStore {
				// A no-op appends nothing, so no concurrency check would catch a change made
				// through another keysd since the state was cached: ask the stream whether the
				// key's last event is still the one decided on (one leader read).
				latest, err := h.store.KeyLastSeq(ctx, c.ProjectID, keyID)
				if err != nil {
					return Result{}, fmt.Errorf("update key %s: %w", keyID, err)
				}
				if latest != seq {
					from = fromStore
					continue
				}
			}
			return Result{Key: key.Snapshot(), Seq: seq}, nil
		}
		last, err := h.append(ctx, seq, events)
		if err == nil {
			keySeq := seq // the stream sequence of this key's last event
			for i, e := range events {
				if e.KeyID != keyID {
					continue // a key a rotation created; its caller folds it
				}
				if key, err = domain.EvolveKey(key, e); err != nil {
					return Result{}, err
				}
				keySeq = last - uint64(len(events)-1-i) // one batch: consecutive sequences
			}
			h.remember(key.Snapshot(), keySeq, 0)
			return Result{Key: key.Snapshot(), Seq: last}, nil
		}
		if !errors.Is(err, eventstore.ErrConflict) {
			return Result{}, fmt.Errorf("update key %s: %w", keyID, err)
		}
		if attempt >= h.cfg.MaxAttempts {
			return Result{}, fmt.Errorf("update key %s after %d attempts: %w", keyID, attempt, ErrContention)
		}
		from = fromStore
		backoff(ctx, attempt)
	}
}

// append appends the events one decision on a key made: the key's own, or a rotation's,
// which ends with the KeyCreated of the key that replaces it.
func (h *Handler) append(ctx context.Context, expected uint64, events []domain.Event) (uint64, error) {
	last := events[len(events)-1]
	if created, ok := last.Data.(domain.KeyCreated); ok && created.RotatedFrom != "" {
		return h.store.AppendRotation(ctx, expected, events)
	}
	return h.store.AppendKeyEvents(ctx, expected, events)
}

// stateSource is where a command takes a key's state from.
type stateSource int

const (
	// fromIndex: the process's index of key states (KeyStates), which falls back to the read
	// model. It is at least as recent as the read model, and as this process's own last
	// write; only a change through another keysd that this one has not projected yet makes
	// it stale, and the append's concurrency check catches that. It saves a read-model
	// query per command (profiled: a fifth of keysd's CPU on PATCH with PostgreSQL).
	fromIndex stateSource = iota
	// fromStore: the key's events in the stream, the source of truth.
	fromStore
)

// load returns the key and the sequence of its last event.
func (h *Handler) load(ctx context.Context, projectID, keyID string, from stateSource) (*domain.Key, uint64, error) {
	if h.states != nil {
		snap, seq, err := h.states.KeyState(ctx, projectID, keyID)
		switch {
		case err == nil && from == fromIndex:
			return domain.RestoreKey(snap), seq, nil
		case err == nil:
			// The index's state is the fold of the key's events up to seq: start from it and
			// fold only what the stream has after it. A key with a long history (hundreds of
			// thousands of renames) would otherwise take seconds to load, under its lock,
			// after every conflict.
			key, last, err := h.foldTail(ctx, domain.RestoreKey(snap), seq)
			if err == nil {
				h.remember(key.Snapshot(), last, 0)
			}
			return key, last, err
		case !errors.Is(err, domain.ErrKeyNotFound):
			return nil, 0, fmt.Errorf("load key %s: %w", keyID, err)
		}
		// Not known yet: perhaps created through another instance a moment ago.
	}
	key, seq, created, err := h.loadFromStore(ctx, projectID, keyID)
	if err == nil {
		h.remember(key.Snapshot(), seq, created)
	}
	return key, seq, err
}

// foldTail brings key, as of stream sequence seq, up to date with the key's events after it.
func (h *Handler) foldTail(ctx context.Context, key *domain.Key, seq uint64) (*domain.Key, uint64, error) {
	snap := key.Snapshot()
	recs, err := h.store.LoadKeyAfter(ctx, snap.ProjectID, snap.ID, seq)
	if err != nil {
		return nil, 0, fmt.Errorf("load key %s: %w", snap.ID, err)
	}
	for _, r := range recs {
		seq = r.Seq
		if r.Err != nil {
			continue // not an event: set aside, as the projector does
		}
		if next, err := domain.EvolveKey(key, r.Event); err == nil {
			key = next
		}
	}
	return key, seq, nil
}

// LoadKey folds a key from its events in the store, and returns the stream sequence of the
// last message on its subjects (the expected sequence of the next append).
func (h *Handler) LoadKey(ctx context.Context, projectID, keyID string) (*domain.Key, uint64, error) {
	key, seq, _, err := h.loadFromStore(ctx, projectID, keyID)
	return key, seq, err
}

// loadFromStore is LoadKey with the stream sequence of the key's creation.
func (h *Handler) loadFromStore(ctx context.Context, projectID, keyID string) (key *domain.Key, seq, created uint64, err error) {
	recs, err := h.store.LoadKey(ctx, projectID, keyID)
	if err != nil {
		return nil, 0, 0, err
	}
	for _, r := range recs {
		if r.Err != nil {
			continue // not an event: set aside, as the projector does
		}
		next, err := domain.EvolveKey(key, r.Event)
		if err != nil {
			continue
		}
		if key == nil {
			created = r.Seq
		}
		key = next
	}
	if key == nil {
		return nil, 0, 0, domain.ErrKeyNotFound
	}
	return key, recs[len(recs)-1].Seq, created, nil
}

func backoff(ctx context.Context, attempt int) {
	d := time.Duration(attempt) * time.Millisecond
	d += time.Duration(rand.Int64N(int64(d) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// CreatedProject is a new project with its secret server key, which exists only in this value.
type CreatedProject struct {
	Project   domain.ProjectSnapshot
	ServerKey string
	Seq       uint64
}

// CreateProject registers a project and issues its secret server key.
func (h *Handler) CreateProject(ctx context.Context, actor domain.Actor, name string) (CreatedProject, error) {
	random := make([]byte, 32)
	if _, err := io.ReadFull(h.cfg.Random, random); err != nil {
		return CreatedProject{}, fmt.Errorf("create project: random: %w", err)
	}
	serverKey := domain.FormatServerKey(random)
	e, err := domain.DecideCreateProject(domain.CreateProject{
		ProjectID: uuid.NewString(), Name: name,
		ServerKeyID: uuid.NewString(), ServerKeyHash: h.hasher.HashServerKey(serverKey),
	}, domain.Meta{Time: h.cfg.Clock(), Actor: actor, NewID: newEventID})
	if err != nil {
		return CreatedProject{}, err
	}
	seq, err := h.store.AppendProjectEvent(ctx, e)
	if err != nil {
		return CreatedProject{}, fmt.Errorf("create project: %w", err)
	}
	p, err := domain.ProjectFromEvent(e)
	if err != nil {
		return CreatedProject{}, err
	}
	return CreatedProject{Project: p, ServerKey: serverKey, Seq: seq}, nil
}
