package projections

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/eventstore"
)

// Difference is one key on which a read model and the stream disagree.
type Difference struct {
	ProjectID, KeyID string
	// What says what differs, field by field.
	What string
}

// VerifyResult is what Verify compared.
type VerifyResult struct {
	// Checkpoint is the sequence both sides were compared at.
	Checkpoint uint64
	// Keys is how many keys the read model holds; Events how many messages were replayed.
	Keys, Events uint64
	Differences  []Difference
	// Refused lists the stream's messages no read model applies (see Refusal): forged or
	// altered messages, garbage, events out of their key's version order.
	Refused []Refusal
}

// Verify replays the stream in memory up to the read model's checkpoint and compares every
// key with the read model. The read model is read in one REPEATABLE READ transaction, so
// its rows and its checkpoint are of one moment even while projectors keep writing. fold
// bounds the memory of the replay.
func (p *Postgres) Verify(ctx context.Context, store *eventstore.Store, fold FoldConfig) (VerifyResult, error) {
	var res VerifyResult
	err := pgx.BeginTxFunc(ctx, p.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var pos int64
		if err := tx.QueryRow(ctx, p.sql.selectCheckpoint).Scan(&pos); err != nil {
			return fmt.Errorf("read checkpoint: %w", err)
		}
		res.Checkpoint = uint64(pos)
		mem := newShardedMemory(0, fold)
		err := foldStream(ctx, store, 1, res.Checkpoint, mem.Apply, func(n int) { res.Events += uint64(n) })
		mem.wait()
		if err == nil {
			err = mem.overLimit()
		}
		if err != nil {
			return err
		}
		res.Refused = mem.takeRefusals()
		// Every row against the replay, then every replayed key the rows lacked.
		seen := make(map[keyRef]struct{})
		rows, _ := tx.Query(ctx, p.sql.selectAllKeys)
		var row keyRow
		_, err = pgx.ForEachRow(rows, row.targets(), func() error {
			res.Keys++
			got := row.state().view()
			seen[keyRef{got.ProjectID, got.ID}] = struct{}{}
			want, err := mem.Key(ctx, got.ProjectID, got.ID)
			if err != nil {
				res.Differences = append(res.Differences, Difference{got.ProjectID, got.ID, "in the read model but not in the stream"})
				return nil
			}
			if what := compareKeys(got, want); what != "" {
				res.Differences = append(res.Differences, Difference{got.ProjectID, got.ID, what})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read keys: %w", err)
		}
		return mem.EachKey(ctx, func(v KeyView) error {
			if _, ok := seen[keyRef{v.ProjectID, v.ID}]; !ok {
				res.Differences = append(res.Differences, Difference{v.ProjectID, v.ID, "in the stream but missing from the read model"})
			}
			return nil
		})
	})
	slices.SortFunc(res.Differences, func(a, b Difference) int {
		return strings.Compare(a.ProjectID+"/"+a.KeyID, b.ProjectID+"/"+b.KeyID)
	})
	return res, err
}

// compareKeys lists the fields on which the read model (got) differs from the replay
// (want), or "" when none does.
func compareKeys(got, want KeyView) string {
	var diffs []string
	add := func(field string, g, w any) {
		diffs = append(diffs, fmt.Sprintf("%s: read model %v, stream %v", field, g, w))
	}
	if got.UserID != want.UserID {
		add("user_id", quote(got.UserID), quote(want.UserID))
	}
	if got.TeamID != want.TeamID {
		add("team_id", quote(got.TeamID), quote(want.TeamID))
	}
	if got.Description != want.Description {
		add("description", quote(got.Description), quote(want.Description))
	}
	if !sameTime(got.ExpiresAt, want.ExpiresAt) {
		add("expires_at", timeText(got.ExpiresAt), timeText(want.ExpiresAt))
	}
	if !sameTime(got.RevokedAt, want.RevokedAt) {
		add("manually_revoked_at", timeText(got.RevokedAt), timeText(want.RevokedAt))
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		add("created_at", timeText(&got.CreatedAt), timeText(&want.CreatedAt))
	}
	if got.IsPublic != want.IsPublic {
		add("is_public", got.IsPublic, want.IsPublic)
	}
	if got.SecretHash != want.SecretHash {
		add("secret_hash", "(differs)", "(differs)") // never print a hash
	}
	if got.LastFour != want.LastFour {
		add("last_four", quote(got.LastFour), quote(want.LastFour))
	}
	if got.Version != want.Version {
		add("version", got.Version, want.Version)
	}
	if got.LastSeq != want.LastSeq {
		add("last_seq", got.LastSeq, want.LastSeq)
	}
	return strings.Join(diffs, "; ")
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func timeText(t *time.Time) string {
	if t == nil {
		return "null"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
