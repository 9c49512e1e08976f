package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

// credentialScanningRevoke is POST /integrations/credential-scanning/revoke (CONTRACT section
// 6): a secret-scanning service reports a key it found in public, with no credentials, and
// the key is revoked, with the actor {"type": "credential_scanning"}. The answer is 200
// {"success": true} whether or not the key exists, was valid or was already revoked, and it
// takes at least Deps.CredentialScanningMinDuration, so that neither the body nor the timing
// tells a live key from a dead one. Reports are rate limited per client address.
func (s *server) credentialScanningRevoke(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if err := s.scanLimiter.allow(clientAddress(r), start); err != nil {
		writeError(w, r, err)
		return
	}
	secret, err := decodeCredentialScanning(w, r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	err = s.revokeLeaked(r.Context(), secret)
	if errors.Is(err, domain.ErrKeyNotFound) || errors.Is(err, domain.ErrInvalidSecretKey) {
		err = nil
	}
	// Wait out the floor before answering, an error included: a failure must not be quicker.
	if wait := s.d.CredentialScanningMinDuration - time.Since(start); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

// revokeLeaked revokes the key a secret belongs to, in whichever project it is. A secret that
// names no key, or a key whose secret it is not, is domain.ErrKeyNotFound.
func (s *server) revokeLeaked(ctx context.Context, secret string) error {
	keyID, err := domain.ParseSecretKey(secret)
	if err != nil {
		return err
	}
	projectID, err := s.d.Store.KeyProject(ctx, keyID)
	if err != nil {
		return err
	}
	key, err := s.key(ctx, projectID, keyID)
	if err != nil {
		return err
	}
	if !s.d.Hasher.SecretKeyMatches(secret, key.SecretHash) {
		return domain.ErrKeyNotFound
	}
	revoked := true
	caller := commands.Caller{
		ProjectID: projectID,
		Actor:     domain.Actor{Type: domain.ActorCredentialScanning},
		RequestID: requestID(ctx),
	}
	res, err := s.d.Commands.UpdateKey(ctx, caller, keyID, domain.UpdateKey{Revoked: &revoked})
	if err != nil {
		return err
	}
	return s.waitFor(ctx, res.Seq)
}
