package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LastUseBucket is the KV bucket holding each key's last successful check: one entry per
// key, named <project>.<key>, whose value is the time in milliseconds since the epoch.
//
// Last use is not an event: a check is a read, and an event per check (or per key per
// interval) would grow the key stream with the traffic and slow every replay and every load
// of a key. In a bucket, a key has one entry whatever its traffic (history 1), the stream of
// events stays the record of changes, and a replay never reads it.
const LastUseBucket = "KEYLEDGER_LAST_USED"

// lastUseMaxBytes bounds the bucket: about 3 million keys' entries.
const lastUseMaxBytes = 512 << 20

// LastUseStore reads and writes the last-use bucket.
type LastUseStore struct {
	kv      jetstream.KeyValue
	js      jetstream.JetStream
	timeout time.Duration
}

// LastUse is one key's recorded last use; Revision is the entry's revision in the bucket,
// which a later Record uses to move it forward only.
type LastUse struct {
	ProjectID, KeyID string
	At               time.Time
	Revision         uint64
}

// OpenLastUse returns the last-use bucket, creating it when it is missing.
func (s *Store) OpenLastUse(ctx context.Context) (*LastUseStore, error) {
	kv, err := s.openBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      LastUseBucket,
		Description: "keyledger: the last successful check of each key",
		History:     1,
		MaxBytes:    lastUseMaxBytes,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, err
	}
	return &LastUseStore{kv: kv, js: s.js, timeout: s.cfg.Timeout}, nil
}

func lastUseKey(projectID, keyID string) (string, bool) {
	if !validToken(projectID) || !validToken(keyID) {
		return "", false
	}
	return projectID + "." + keyID, true
}

// lastUseValue is a use's time as the bucket keeps it (milliseconds) and its entry's value.
func lastUseValue(at time.Time) (time.Time, []byte) {
	at = at.UTC().Truncate(time.Millisecond)
	return at, []byte(strconv.FormatInt(at.UnixMilli(), 10))
}

// Record sets a key's last use to at unless the bucket already holds a later one (written
// by another keysd). known is the revision last seen for the key (0: none); it saves a read
// when nobody else wrote the entry since. It returns the key's latest use as the bucket now
// holds it: at, or the later one found there.
func (l *LastUseStore) Record(ctx context.Context, projectID, keyID string, at time.Time, known uint64) (LastUse, error) {
	key, ok := lastUseKey(projectID, keyID)
	if !ok {
		return LastUse{}, fmt.Errorf("last use: invalid key address %q/%q", projectID, keyID)
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	at, value := lastUseValue(at)
	rev := known
	for range 3 {
		var err error
		var next uint64
		if rev == 0 {
			next, err = l.kv.Create(ctx, key, value)
		} else {
			next, err = l.kv.Update(ctx, key, value, rev)
		}
		if err == nil {
			return LastUse{ProjectID: projectID, KeyID: keyID, At: at, Revision: next}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return LastUse{}, fmt.Errorf("%w: last use of key %s: %w", ErrUnavailable, keyID, err)
		}
		// Someone else wrote it: keep theirs if it is later.
		e, err := l.kv.Get(ctx, key)
		if err != nil {
			return LastUse{}, fmt.Errorf("%w: last use of key %s: %w", ErrUnavailable, keyID, err)
		}
		if cur, ok := parseLastUse(e); ok && !cur.At.Before(at) {
			return cur, nil
		}
		rev = e.Revision()
	}
	return LastUse{}, fmt.Errorf("last use of key %s: too many concurrent writers", keyID)
}

// RecordAll is Record for many keys at once, each LastUse's Revision the one last seen for
// its key (0: none): the writes are pipelined, as asynchronous publishes on the bucket's
// subjects with the same compare-and-set on the entry's revision that Record uses, so a
// burst of newly checked keys costs one publish each instead of a request and its wait.
// A write whose revision no longer matches (another keysd wrote the entry) goes through
// Record, which keeps the later use. It returns, for each use, the key's latest use as the
// bucket now holds it, or the error that kept it from being written.
func (l *LastUseStore) RecordAll(ctx context.Context, uses []LastUse) ([]LastUse, []error) {
	out, errs := make([]LastUse, len(uses)), make([]error, len(uses))
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, len(uses))
	for i, u := range uses {
		key, ok := lastUseKey(u.ProjectID, u.KeyID)
		if !ok {
			errs[i] = fmt.Errorf("last use: invalid key address %q/%q", u.ProjectID, u.KeyID)
			continue
		}
		at, value := lastUseValue(u.At)
		out[i] = LastUse{ProjectID: u.ProjectID, KeyID: u.KeyID, At: at}
		m := &nats.Msg{
			Subject: "$KV." + LastUseBucket + "." + key,
			Header:  nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(u.Revision, 10)}},
			Data:    value,
		}
		f, err := l.js.PublishMsgAsync(m)
		if err != nil {
			errs[i] = fmt.Errorf("%w: last use of key %s: %w", ErrUnavailable, u.KeyID, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			out[i].Revision = ack.Sequence
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				out[i], errs[i] = l.Record(ctx, uses[i].ProjectID, uses[i].KeyID, uses[i].At, uses[i].Revision)
				continue
			}
			errs[i] = fmt.Errorf("%w: last use of key %s: %w", ErrUnavailable, uses[i].KeyID, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("%w: last use of key %s: %w", ErrUnavailable, uses[i].KeyID, ctx.Err())
		}
	}
	return out, errs
}

// Watch calls fn with every key's recorded last use, then with each new one as it is
// written, until ctx ends; caughtUp is called once the entries there were at the start
// have been delivered.
func (l *LastUseStore) Watch(ctx context.Context, fn func(LastUse), caughtUp func()) error {
	w, err := l.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("%w: watch %s: %w", ErrUnavailable, LastUseBucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("%w: watch of %s ended", ErrUnavailable, LastUseBucket)
			}
			if e == nil {
				if caughtUp != nil {
					caughtUp()
				}
				continue
			}
			if u, ok := parseLastUse(e); ok {
				fn(u)
			}
		}
	}
}

func parseLastUse(e jetstream.KeyValueEntry) (LastUse, bool) {
	projectID, keyID, ok := strings.Cut(e.Key(), ".")
	if !ok {
		return LastUse{}, false
	}
	ms, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return LastUse{}, false
	}
	return LastUse{ProjectID: projectID, KeyID: keyID, At: time.UnixMilli(ms).UTC(), Revision: e.Revision()}, true
}
