package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// Idempotency keys (CONTRACT section 7): a create or PATCH sent with an Idempotency-Key
// header is executed once; within 24 hours the same key, on the same method, path and
// project with the same body, gets the first response again (the created key's secret
// included) and appends nothing. The record lives in the event store's idempotency bucket,
// so every keysd of a deployment, restarted or not, sees it; the response in it is sealed
// with a subkey of the server-side secret (domain.Hasher.Seal), so the secret never rests
// in plain text.

// IdempotencyRecords is where idempotency records are kept (eventstore.IdempotencyRecords).
type IdempotencyRecords interface {
	// Claim creates the record atomically, or returns eventstore.ErrRecordExists with the
	// record there is and its revision.
	Claim(ctx context.Context, key string, value []byte) (uint64, []byte, error)
	// Replace overwrites the record at revision rev, or is eventstore.ErrRecordChanged.
	Replace(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
	// Release removes the record at revision rev, so that the request may run again.
	Release(ctx context.Context, key string, rev uint64) error
}

const (
	headerIdempotencyKey = "Idempotency-Key"
	// headerIdempotentReplayed marks a response sent again from its record.
	headerIdempotentReplayed = "Idempotent-Replayed"
	maxIdempotencyKey        = 255
	// claimStale is when a claim that was never completed (its keysd crashed) may be taken
	// over; the server drops such a claim by itself after eventstore.ClaimTTL.
	claimStale = 30 * time.Second
	// retryAfterInFlight is the Retry-After of IDEMPOTENCY_KEY_IN_USE.
	retryAfterInFlight = 1
)

// Errors of idempotent requests, mapped in errorTable.
var (
	errIdempotencyKeyReused = errors.New("idempotency key reused with another request body")
	errIdempotencyKeyInUse  = errors.New("idempotency key in use by a request in flight")
)

// idempotencyRecord is the stored record: in the clear, what is needed to tell a claim from
// a response and the same body from another; the response itself only sealed.
type idempotencyRecord struct {
	Fingerprint string `json:"fingerprint"`        // hex SHA-256 of the request body
	ClaimedAt   int64  `json:"claimed_at_millis"`  // when the first request started
	Sealed      []byte `json:"response,omitempty"` // sealed storedResponse; empty while in flight
	revision    uint64 // the record's revision in the bucket, when read from it
}

// storedResponse is what a replay sends.
type storedResponse struct {
	Status int    `json:"status"`
	ETag   string `json:"etag,omitempty"`
	Body   []byte `json:"body"`
}

// storedResponseV1 marks the binary form of a stored response (encode).
const storedResponseV1 = 1

// encode is the response as it is sealed in its record: a version byte, the status (2 bytes,
// big endian), the ETag's length (1 byte) and the ETag, then the body as it was sent. A
// replay decodes it with no JSON and copies the body out (profiled: decoding a JSON form,
// the body in base64, was most of a replay's own cost).
func (r storedResponse) encode() ([]byte, error) {
	if r.Status < 100 || r.Status > 999 || len(r.ETag) > 255 {
		return nil, fmt.Errorf("response to store: status %d, ETag of %d bytes", r.Status, len(r.ETag))
	}
	b := make([]byte, 0, 4+len(r.ETag)+len(r.Body))
	b = append(b, storedResponseV1, byte(r.Status>>8), byte(r.Status), byte(len(r.ETag)))
	b = append(b, r.ETag...)
	return append(b, r.Body...), nil
}

// decodeStoredResponse reads a sealed response: the binary form of encode, or the JSON of
// records written before it ({"status", "etag", "body" in base64}).
func decodeStoredResponse(plain []byte) (storedResponse, error) {
	if len(plain) > 0 && plain[0] == '{' {
		var r storedResponse
		err := json.Unmarshal(plain, &r)
		return r, err
	}
	if len(plain) < 4 || plain[0] != storedResponseV1 || len(plain) < 4+int(plain[3]) {
		return storedResponse{}, errors.New("stored response: not a known form")
	}
	n := 4 + int(plain[3])
	return storedResponse{Status: int(plain[1])<<8 | int(plain[2]), ETag: string(plain[4:n]), Body: plain[n:]}, nil
}

// idempotent runs h at most once per Idempotency-Key, replaying its response to repeats.
// Requests without the header run as they are.
func (s *server) idempotent(h apiHandler) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
		values := r.Header.Values(headerIdempotencyKey)
		if len(values) == 0 || s.d.Idempotency == nil {
			h(w, r, caller)
			return
		}
		key, err := parseIdempotencyKey(r, values)
		if err != nil {
			writeError(w, r, err)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
		if err != nil {
			writeError(w, r, bodyParsingError("The request body could not be read."))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) > MaxBodyBytes {
			h(w, r, caller) // refused as too large; nothing to remember
			return
		}
		sum := sha256.Sum256(body)
		// ClaimedAt is set here, not in the claim, so that the completed record keeps it: the
		// copy kept for replays expires by it (a record stored with 0 was never kept, and
		// every replay read the bucket again).
		rec := idempotencyRecord{Fingerprint: hex.EncodeToString(sum[:]), ClaimedAt: time.Now().UnixMilli()}
		name := recordName(caller.ProjectID, r.Method, r.URL.Path, key)

		rev, ok := s.claimIdempotencyKey(w, r, name, rec)
		if !ok {
			return
		}
		cw := &capturingWriter{ResponseWriter: w}
		h(cw, r, caller)
		// The client's request may be gone; the record must still be settled.
		ctx := context.WithoutCancel(r.Context())
		if !replayable(cw.status) {
			s.metrics.idempotency.WithLabelValues(idemReleased).Inc()
			if err := s.d.Idempotency.Release(ctx, name, rev); err != nil && !errors.Is(err, eventstore.ErrRecordChanged) {
				s.log.WarnContext(ctx, "idempotency claim not released; it expires by itself", "request_id", requestID(ctx), "err", err)
			}
			return
		}
		resp := storedResponse{Status: cw.status, ETag: cw.Header().Get("ETag"), Body: cw.body.Bytes()}
		if err := s.completeIdempotencyKey(ctx, name, rev, rec, resp); err != nil {
			s.metrics.idempotency.WithLabelValues(idemNotStored).Inc()
			s.log.WarnContext(ctx, "idempotency record not completed; a retry may run the request again after the claim expires",
				"request_id", requestID(ctx), "err", err)
		}
	}
}

// claimIdempotencyKey claims the record for this request, or answers the request from the
// record there is: the first response again, 422 for another body, 409 while in flight.
// ok tells whether the request is to run.
func (s *server) claimIdempotencyKey(w http.ResponseWriter, r *http.Request, name string, rec idempotencyRecord) (uint64, bool) {
	now := time.UnixMilli(rec.ClaimedAt)
	first, cached := s.replays.get(name, now)
	outcome := idemReplayedMemory
	var claim []byte
	if !cached {
		var err error
		if claim, err = json.Marshal(rec); err != nil {
			writeError(w, r, err)
			return 0, false
		}
		rev, existing, err := s.d.Idempotency.Claim(r.Context(), name, claim)
		if err == nil {
			s.metrics.idempotency.WithLabelValues(idemClaimed).Inc()
			return rev, true
		}
		if !errors.Is(err, eventstore.ErrRecordExists) {
			writeError(w, r, err)
			return 0, false
		}
		if err := json.Unmarshal(existing, &first); err != nil {
			writeError(w, r, err)
			return 0, false
		}
		first.revision = rev
		if len(first.Sealed) > 0 {
			s.replays.put(name, first, now)
		}
		outcome = idemReplayedBucket
	}
	rev := first.revision
	switch {
	case first.Fingerprint != rec.Fingerprint:
		s.metrics.idempotency.WithLabelValues(idemReused).Inc()
		writeError(w, r, errIdempotencyKeyReused)
		return 0, false
	case len(first.Sealed) > 0:
		s.metrics.idempotency.WithLabelValues(outcome).Inc()
		s.replay(w, r, name, first)
		return 0, false
	case now.Sub(time.UnixMilli(first.ClaimedAt)) < claimStale:
		s.metrics.idempotency.WithLabelValues(idemInUse).Inc()
		writeError(w, r, errIdempotencyKeyInUse)
		return 0, false
	}
	// A claim its keysd never completed: take it over, unless someone else just did.
	rev, err := s.d.Idempotency.Replace(r.Context(), name, claim, rev)
	if errors.Is(err, eventstore.ErrRecordChanged) {
		s.metrics.idempotency.WithLabelValues(idemInUse).Inc()
		writeError(w, r, errIdempotencyKeyInUse)
		return 0, false
	}
	if err != nil {
		writeError(w, r, err)
		return 0, false
	}
	s.metrics.idempotency.WithLabelValues(idemTakenOver).Inc()
	return rev, true
}

// completeIdempotencyKey stores the response, sealed, in place of the claim.
func (s *server) completeIdempotencyKey(ctx context.Context, name string, rev uint64, rec idempotencyRecord, resp storedResponse) error {
	plain, err := resp.encode()
	if err != nil {
		return err
	}
	nonce := make([]byte, domain.SealNonceBytes)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if rec.Sealed, err = s.d.Hasher.Seal(nonce, plain, sealContext(name, rec.Fingerprint)); err != nil {
		return err
	}
	done, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err = s.d.Idempotency.Replace(ctx, name, done, rev); err != nil {
		return err
	}
	s.metrics.idempotency.WithLabelValues(idemStored).Inc()
	s.replays.put(name, rec, time.Now())
	return nil
}

// replayCache keeps records whose response is stored, so that a repeat is answered from
// memory. A completed record never changes in the bucket (only claims are released or taken
// over), so a copy is good until the bucket would expire it; the cache keeps it for less.
type replayCache struct {
	mu      sync.Mutex
	records map[string]cachedRecord
}

type cachedRecord struct {
	rec   idempotencyRecord
	until time.Time
}

// replayCacheSize bounds the cache; replayCacheTTL is how long a copy is kept at most.
const (
	replayCacheSize = 10_000
	replayCacheTTL  = time.Hour
)

// len is how many records the cache holds.
func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.records)
}

func (c *replayCache) get(name string, now time.Time) (idempotencyRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.records[name]
	if !ok || now.After(e.until) {
		return idempotencyRecord{}, false
	}
	return e.rec, true
}

func (c *replayCache) put(name string, rec idempotencyRecord, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.records == nil {
		c.records = map[string]cachedRecord{}
	}
	if len(c.records) >= replayCacheSize {
		for k := range c.records { // drop an arbitrary one
			delete(c.records, k)
			break
		}
	}
	// Never past the bucket's expiry, which is 24 hours after the response was stored, so
	// after the claim. A record without its claim's time (written by an older keysd) is kept
	// for a minute only.
	until := now.Add(replayCacheTTL)
	if rec.ClaimedAt == 0 {
		until = now.Add(time.Minute)
	} else if expiry := time.UnixMilli(rec.ClaimedAt).Add(eventstore.IdempotencyWindow); expiry.Before(until) {
		until = expiry
	}
	c.records[name] = cachedRecord{rec: rec, until: until}
}

// replay sends the response stored in a record.
func (s *server) replay(w http.ResponseWriter, r *http.Request, name string, rec idempotencyRecord) {
	plain, err := s.d.Hasher.Open(rec.Sealed, sealContext(name, rec.Fingerprint))
	if err != nil {
		writeError(w, r, err)
		return
	}
	resp, err := decodeStoredResponse(plain)
	if err != nil {
		writeError(w, r, err)
		return
	}
	h := w.Header()
	if resp.ETag != "" {
		h.Set("ETag", resp.ETag)
	}
	body := resp.Body
	if resp.Status >= 400 {
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			h.Set(headerKnownError, e.Code)
		}
	}
	h.Set(headerIdempotentReplayed, "true")
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(resp.Status)
	_, _ = w.Write(body)
}

// replayable tells whether a response is the request's outcome, to be sent again to a
// repeat: a success, or a refusal that the same request would get again (no such key, a
// revoked key, a failed precondition). A request refused for its shape (400, 413), or
// shed or failed by the server (429, 5xx), leaves no record: it may be sent again, fixed or
// not, as new.
func replayable(status int) bool {
	switch {
	case status >= 200 && status < 300:
		return true
	case status == http.StatusNotFound, status == http.StatusConflict, status == http.StatusPreconditionFailed:
		return true
	}
	return false
}

// parseIdempotencyKey checks the header: one value of 1 to 255 printable ASCII characters.
func parseIdempotencyKey(r *http.Request, values []string) (string, error) {
	if len(values) != 1 {
		return "", schemaError(r, "headers.idempotency-key must be sent once")
	}
	k := values[0]
	if len(k) < 1 || len(k) > maxIdempotencyKey {
		return "", schemaError(r, "headers.idempotency-key must be 1 to 255 characters")
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", schemaError(r, "headers.idempotency-key must be printable ASCII")
		}
	}
	return k, nil
}

// recordName is the record's name in the bucket: a hash of what makes two requests the same
// (the project of the credentials, the method, the path and the key), so that neither the
// key nor the path need be a valid bucket key, and none is readable in the bucket.
func recordName(projectID, method, path, key string) string {
	h := sha256.New()
	for _, part := range []string{projectID, method, path, key} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sealContext(name, fingerprint string) []byte {
	return []byte("idempotency/" + name + "/" + fingerprint)
}

// capturingWriter passes a response through and keeps a copy of it.
type capturingWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *capturingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *capturingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}
