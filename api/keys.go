package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/projections"
)

// createKey is POST /user-api-keys: the key object plus, this once, the full secret.
func (s *server) createKey(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	newKey, err := decodeCreate(w, r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	created, err := s.d.Commands.CreateKey(r.Context(), caller, newKey)
	if err != nil {
		writeError(w, r, err)
		return
	}
	// The key exists now, and its secret is in this response only: a projector that is slow to
	// show it must not cost the client the secret, so a failed wait is logged, not returned.
	if err := s.waitFor(r.Context(), created.Seq); err != nil {
		s.log.WarnContext(r.Context(), "created key not yet in the read model",
			"request_id", requestID(r.Context()), "key_id", created.Key.ID, "seq", created.Seq, "err", err)
	}
	obj := s.keyObject(created.Key)
	obj.Value = created.Secret
	setETag(w, created.Key.Version)
	writeJSON(w, http.StatusOK, obj)
}

// keysOfUser reads a user's keys in the caller's project, after the read barrier.
func (s *server) keysOfUser(r *http.Request, caller commands.Caller, userID string) ([]projections.KeyView, error) {
	if err := s.readBarrier(r.Context()); err != nil {
		return nil, err
	}
	views, err := s.d.ReadModel.KeysByUser(r.Context(), caller.ProjectID, userID)
	if err != nil {
		return nil, fmt.Errorf("keys of a user: %w", err)
	}
	return views, nil
}

// listKeys is GET /user-api-keys?user_id=U: the user's keys, newest first.
func (s *server) listKeys(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	userID, err := decodeList(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	views, err := s.keysOfUser(r, caller, userID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	list := keyList{IsPaginated: false, Items: make([]keyObject, 0, len(views))}
	for _, k := range views {
		list.Items = append(list.Items, s.keyObject(k.KeySnapshot))
	}
	writeJSON(w, http.StatusOK, list)
}

// getKey is GET /user-api-keys/{api_key_id}.
func (s *server) getKey(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	id, err := decodeGet(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := s.readBarrier(r.Context()); err != nil {
		writeError(w, r, err)
		return
	}
	key, err := s.key(r.Context(), caller.ProjectID, id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if notModified(w, r, key.Version) {
		return
	}
	setETag(w, key.Version)
	writeJSON(w, http.StatusOK, s.keyObject(key))
}

// updateKey is PATCH /user-api-keys/{api_key_id}, the seed page: only the fields present are
// applied, and the response (and every later read) shows the key after the change.
func (s *server) updateKey(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	id, u, err := decodeUpdate(w, r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	u.Precondition = ifMatch(r)
	res, err := s.d.Commands.UpdateKey(r.Context(), caller, id, u)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := s.waitFor(r.Context(), res.Seq); err != nil {
		writeError(w, r, err)
		return
	}
	setETag(w, res.Key.Version)
	writeJSON(w, http.StatusOK, s.keyObject(res.Key))
}

// rotateKey is POST /user-api-keys/{api_key_id}/rotate: a new key for the same owner and
// description, with its secret this once, and the old key expiring after the grace period.
func (s *server) rotateKey(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	id, grace, err := decodeRotate(w, r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	created, err := s.d.Commands.RotateKey(r.Context(), caller, domain.KeyTypeUser, id, grace)
	if err != nil {
		writeError(w, r, err)
		return
	}
	// As for create: the new secret is in this response only, so a slow projector is logged.
	if err := s.waitFor(r.Context(), created.Seq); err != nil {
		s.log.WarnContext(r.Context(), "rotated key not yet in the read model",
			"request_id", requestID(r.Context()), "key_id", created.Key.ID, "seq", created.Seq, "err", err)
	}
	obj := s.keyObject(created.Key)
	obj.Value = created.Secret
	obj.RotatedFrom = id
	setETag(w, created.Key.Version)
	writeJSON(w, http.StatusOK, obj)
}

// checkKey is POST /user-api-keys/check: the key a secret belongs to, if it is valid now.
// A malformed secret is not looked up; a revoked key is reported before an expired one.
func (s *server) checkKey(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	secret, err := decodeCheck(w, r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	keyID, err := domain.ParseSecretKey(secret)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := s.readBarrier(r.Context()); err != nil {
		writeError(w, r, err)
		return
	}
	key, err := s.key(r.Context(), caller.ProjectID, keyID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if !s.d.Hasher.SecretKeyMatches(secret, key.SecretHash) {
		writeError(w, r, domain.ErrKeyNotFound)
		return
	}
	now := s.d.Clock()
	if err := domain.RestoreKey(key).Check(now); err != nil {
		writeError(w, r, err)
		return
	}
	if s.d.LastUse != nil {
		s.d.LastUse.Touch(key.ProjectID, key.ID, now.UTC().Truncate(time.Millisecond))
	}
	setETag(w, key.Version)
	writeJSON(w, http.StatusOK, s.keyObject(key))
}

// keyObject renders a key with its last use.
func (s *server) keyObject(k domain.KeySnapshot) keyObject {
	obj := newKeyObject(k)
	if s.d.LastUse == nil {
		return obj
	}
	return obj.withLastUse(s.d.LastUse.At(k.ProjectID, k.ID))
}

// key returns one key of a project from the read model or, when the read model does not have
// it yet (created a moment ago through another keysd), from the event store.
func (s *server) key(ctx context.Context, projectID, keyID string) (domain.KeySnapshot, error) {
	view, err := s.d.ReadModel.Key(ctx, projectID, keyID)
	if err == nil {
		return view.KeySnapshot, nil
	}
	if !errors.Is(err, domain.ErrKeyNotFound) {
		return domain.KeySnapshot{}, fmt.Errorf("read key %s: %w", keyID, err)
	}
	key, _, err := s.d.Commands.LoadKey(ctx, projectID, keyID)
	if err != nil {
		return domain.KeySnapshot{}, err
	}
	return key.Snapshot(), nil
}

// readBarrier makes a read see every event appended before it arrived, through any keysd,
// when the deployment asks for it (Deps.ReadBarrier), and while the projector has not yet
// caught up with the stream since start: it learns the stream's last sequence (one request
// shared by the reads arriving together, streamPosition) and waits for the projector.
func (s *server) readBarrier(ctx context.Context) error {
	// A projector still catching up after a start (the in-process read model is rebuilt
	// from the stream) could serve an old state: reads wait for the stream's end then too.
	if !s.d.ReadBarrier && s.d.Projector.Ready() {
		return nil
	}
	seq, err := s.position.last(ctx)
	if err != nil {
		return fmt.Errorf("read barrier: %w", err)
	}
	return s.waitFor(ctx, seq)
}

// waitFor returns once the read model has applied the stream up to seq, or, after
// Deps.WaitTimeout, an error that maps to 503 with Retry-After.
func (s *server) waitFor(ctx context.Context, seq uint64) error {
	if s.d.Projector.Position() >= seq {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.d.WaitTimeout)
	defer cancel()
	if err := s.d.Projector.WaitFor(wctx, seq); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("wait for sequence %d: %w", seq, ctx.Err())
		}
		return fmt.Errorf("wait for sequence %d: %w (%w)", seq, errProjectorBehind, err)
	}
	return nil
}
