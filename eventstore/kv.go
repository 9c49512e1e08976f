package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// openBucket returns the KV bucket cfg names, creating it (with the store's replicas) when it
// is missing. An existing bucket is used as its operator left it, like the event stream.
func (s *Store) openBucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	kv, err := s.js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: KV bucket %s: %w", ErrUnavailable, cfg.Bucket, err)
	}
	cfg.Replicas = s.cfg.Replicas
	kv, err = s.js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return s.js.KeyValue(ctx, cfg.Bucket) // created by another keysd meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("create KV bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
