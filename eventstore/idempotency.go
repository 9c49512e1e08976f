package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IdempotencyBucket is the KV bucket of idempotency records: one entry per idempotency key
// (named by a hash of the project, method, path and key), first a claim while the request
// runs, then its response, sealed by the caller. Entries expire 24 hours after their last
// write (MaxAge); a claim left by a crashed keysd expires sooner, by its own TTL.
const IdempotencyBucket = "KEYLEDGER_IDEMPOTENCY"

// Bounds of the idempotency bucket.
const (
	// IdempotencyWindow is how long a response is kept for replay.
	IdempotencyWindow = 24 * time.Hour
	// ClaimTTL is how long the server keeps a claim that was never completed.
	ClaimTTL          = time.Minute
	idempotencyBytes  = 1 << 30
	idempotencyRecord = 256 << 10
)

// ErrRecordExists: a record already holds that idempotency key.
var ErrRecordExists = errors.New("idempotency record exists")

// ErrRecordChanged: the record is no longer at the revision given.
var ErrRecordChanged = errors.New("idempotency record changed")

// IdempotencyRecords stores idempotency records in the bucket.
type IdempotencyRecords struct {
	kv      jetstream.KeyValue
	timeout time.Duration
}

// OpenIdempotency returns the idempotency bucket, creating it when it is missing.
func (s *Store) OpenIdempotency(ctx context.Context) (*IdempotencyRecords, error) {
	kv, err := s.openBucket(ctx, jetstream.KeyValueConfig{
		Bucket:         IdempotencyBucket,
		Description:    "keyledger: responses kept for Idempotency-Key retries (sealed)",
		History:        1,
		TTL:            IdempotencyWindow,
		MaxBytes:       idempotencyBytes,
		MaxValueSize:   idempotencyRecord,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: time.Minute, // lets a claim carry its own TTL
	})
	if err != nil {
		return nil, err
	}
	return &IdempotencyRecords{kv: kv, timeout: s.cfg.Timeout}, nil
}

// Claim creates the record key with value, atomically: it returns the new revision, or
// ErrRecordExists with the record there is and its revision. The record expires after
// ClaimTTL unless Replace overwrites it first.
func (r *IdempotencyRecords) Claim(ctx context.Context, key string, value []byte) (uint64, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	// A repeat is answered with one direct get; only a new key pays for the create too.
	if e, err := r.kv.Get(ctx, key); err == nil {
		return e.Revision(), e.Value(), ErrRecordExists
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil, fmt.Errorf("%w: read idempotency record: %w", ErrUnavailable, err)
	}
	rev, err := r.kv.Create(ctx, key, value, jetstream.KeyTTL(ClaimTTL))
	if err == nil {
		return rev, nil, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, nil, fmt.Errorf("%w: claim idempotency key: %w", ErrUnavailable, err)
	}
	e, err := r.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil, fmt.Errorf("%w: claim idempotency key: the record expired meanwhile", ErrUnavailable)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("%w: read idempotency record: %w", ErrUnavailable, err)
	}
	return e.Revision(), e.Value(), ErrRecordExists
}

// Replace overwrites the record if it is still at revision rev (ErrRecordChanged if not),
// and returns its new revision. The record then lives for IdempotencyWindow.
func (r *IdempotencyRecords) Replace(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	next, err := r.kv.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrRecordChanged
	}
	if err != nil {
		return 0, fmt.Errorf("%w: write idempotency record: %w", ErrUnavailable, err)
	}
	return next, nil
}

// Release removes the record if it is still at revision rev, so that the request may be
// tried again as new.
func (r *IdempotencyRecords) Release(ctx context.Context, key string, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err := r.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return ErrRecordChanged
	}
	if err != nil {
		return fmt.Errorf("%w: release idempotency record: %w", ErrUnavailable, err)
	}
	return nil
}
