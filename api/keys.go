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

// createKey is POST /user-api-keys and POST /team-api-keys: the key object plus, this once,
// the full secret.
func (s *server) createKey(kind keyKind) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
		newKey, err := decodeCreate(w, r, kind)
		if err != nil {
			writeError(w, r, err)
			return
		}
		created, err := s.d.Commands.CreateKey(r.Context(), caller, newKey)
		if err != nil {
			writeError(w, r, err)
			return
		}
		s.writeNewSecret(w, r, created, "")
	}
}

// keysOf reads a user's or a team's keys in the caller's project, after the read barrier.
func (s *server) keysOf(r *http.Request, caller commands.Caller, kind keyKind, owner string) ([]projections.KeyView, error) {
	if err := s.readBarrier(r.Context()); err != nil {
		return nil, err
	}
	views, err := kind.keysOf(s.d.ReadModel, r.Context(), caller.ProjectID, owner)
	if err != nil {
		return nil, fmt.Errorf("keys of a %s: %w", kind.typ, err)
	}
	return views, nil
}

// listKeys is GET /user-api-keys?user_id=U and GET /team-api-keys?team_id=T: the owner's
// keys, newest first.
func (s *server) listKeys(kind keyKind) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
		owner, err := decodeList(r, kind)
		if err != nil {
			writeError(w, r, err)
			return
		}
		views, err := s.keysOf(r, caller, kind, owner)
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
}

// getKey is GET /user-api-keys/{api_key_id} and GET /team-api-keys/{api_key_id}.
func (s *server) getKey(kind keyKind) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
		id, err := decodeGet(r, kind)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := s.readBarrier(r.Context()); err != nil {
			writeError(w, r, err)
			return
		}
		key, err := s.keyOfKind(r.Context(), kind, caller.ProjectID, id)
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
}

// updateKey is PATCH /user-api-keys/{api_key_id} (and the team path), the seed page: only
// the fields present are applied, and the response (and every later read) shows the key
// after the change.
func (s *server) updateKey(kind keyKind) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
		id, u, err := decodeUpdate(w, r, kind)
		if err != nil {
			writeError(w, r, err)
			return
		}
		u.Precondition = ifMatch(r)
		u.Type = kind.typ
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
}

// rotateKey is POST /user-api-keys/{api_key_id}/rotate (and the team path): a new key for
// the same owner and description, with its secret this once, and the old key expiring after
// the grace period.
func (s *server) rotateKey(kind keyKind) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
		id, grace, err := decodeRotate(w, r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		created, err := s.d.Commands.RotateKey(r.Context(), caller, kind.typ, id, grace)
		if err != nil {
			writeError(w, r, err)
			return
		}
		s.writeNewSecret(w, r, created, id)
	}
}

// checkKey is POST /user-api-keys/check and POST /team-api-keys/check: the key a secret
// belongs to, if it is valid now. A malformed secret is not looked up; a key of the other
// kind is WRONG_API_KEY_TYPE, reported before revocation, and a revoked key before an
// expired one.
func (s *server) checkKey(kind keyKind) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
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
		if err := domain.RestoreKey(key).CheckAs(kind.typ, now); err != nil {
			writeError(w, r, err)
			return
		}
		obj := newKeyObject(key)
		if s.d.LastUse != nil {
			obj = obj.withLastUse(s.d.LastUse.Touch(key.ProjectID, key.ID, now.UTC().Truncate(time.Millisecond)), true)
		}
		setETag(w, key.Version)
		writeJSON(w, http.StatusOK, obj)
	}
}

// keyOfKind is key for a path of one kind: a key of the other kind is not found.
func (s *server) keyOfKind(ctx context.Context, kind keyKind, projectID, keyID string) (domain.KeySnapshot, error) {
	key, err := s.key(ctx, projectID, keyID)
	if err != nil {
		return domain.KeySnapshot{}, err
	}
	if !kind.owns(key) {
		return domain.KeySnapshot{}, fmt.Errorf("key %s is a %s key: %w", keyID, key.Type(), domain.ErrKeyNotFound)
	}
	return key, nil
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

// writeNewSecret answers a create or a rotation (rotatedFrom: the old key's id) with the new
// key and its secret. The key exists now and its secret is in this response only: a projector
// that is slow to show it must not cost the client the secret, so a failed wait for it is
// logged, not returned.
func (s *server) writeNewSecret(w http.ResponseWriter, r *http.Request, created commands.CreatedKey, rotatedFrom string) {
	if err := s.waitFor(r.Context(), created.Seq); err != nil {
		s.log.WarnContext(r.Context(), "new key not yet in the read model", "request_id", requestID(r.Context()),
			"key_id", created.Key.ID, "rotated_from", rotatedFrom, "seq", created.Seq, "err", err)
	}
	obj := s.keyObject(created.Key)
	obj.Value = created.Secret
	obj.RotatedFrom = rotatedFrom
	setETag(w, created.Key.Version)
	writeJSON(w, http.StatusOK, obj)
}
