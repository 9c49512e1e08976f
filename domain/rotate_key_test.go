package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// Every rotation rule of CONTRACT section 7 is a row here.
func TestDecideRotate(t *testing.T) {
	soon := later.Add(time.Minute)
	expiringSoon := func() *domain.Key {
		s := activeKey().Snapshot()
		s.ExpiresAt = &soon
		return domain.RestoreKey(s)
	}
	week := domain.MaxRotationGrace
	tests := []struct {
		name       string
		key        *domain.Key
		grace      time.Duration
		wantErr    error
		wantExpiry *time.Time // the old key's expiry after; nil: no ExpiryChanged
	}{
		{name: "grace 0 expires the old key now", key: activeKey(), grace: 0, wantExpiry: &later},
		{name: "grace of a week", key: activeKey(), grace: week, wantExpiry: ptr(later.Add(week))},
		{name: "an old key expiring sooner keeps its expiry", key: expiringSoon(), grace: time.Hour},
		{name: "an old key expiring later is brought forward", key: expiringSoon(), grace: 0, wantExpiry: &later},
		{name: "an expired key can be rotated and stays as it is", key: expiredKey(), grace: time.Hour},
		{name: "a revoked key cannot be rotated", key: revokedKey(), grace: 0, wantErr: domain.ErrKeyAlreadyRevoked},
		{name: "grace over a week is invalid", key: activeKey(), grace: week + time.Second, wantErr: &domain.ValidationError{}},
		{name: "negative grace is invalid", key: activeKey(), grace: -time.Second, wantErr: &domain.ValidationError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := tt.key.DecideRotate(domain.RotateKey{NewKeyID: "k2", Grace: tt.grace, SecretHash: "h", LastFour: "abcd"}, meta(later))
			if tt.wantErr != nil {
				var ve *domain.ValidationError
				if errors.As(tt.wantErr, &ve) && !errors.As(err, &ve) || !errors.As(tt.wantErr, &ve) && !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if len(events) != 0 {
					t.Fatalf("%d events with an error", len(events))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			created := events[len(events)-1]
			d, ok := created.Data.(domain.KeyCreated)
			if !ok || created.KeyID != "k2" || created.Version != 1 || d.RotatedFrom != "k1" || d.Description != "old" ||
				created.UserID != "u1" || d.ExpiresAt != nil || d.SecretHash != "h" {
				t.Fatalf("new key's event %+v", created)
			}
			newKey, err := domain.EvolveKey(nil, created)
			if err != nil || newKey.ID() != "k2" {
				t.Fatalf("new key: %v", err)
			}
			old := tt.key
			for _, e := range events[:len(events)-1] {
				c, ok := e.Data.(domain.ExpiryChanged)
				if !ok || c.Reason != domain.ReasonRotated || c.ReplacedBy != "k2" || e.KeyID != "k1" {
					t.Fatalf("old key's event %+v", e)
				}
				if old, err = domain.EvolveKey(old, e); err != nil {
					t.Fatal(err)
				}
			}
			if tt.wantExpiry == nil {
				if len(events) != 1 {
					t.Fatalf("%d events, want only the new key's", len(events))
				}
				return
			}
			if len(events) != 2 {
				t.Fatalf("%d events, want ExpiryChanged and KeyCreated", len(events))
			}
			if got := old.Snapshot().ExpiresAt; got == nil || !got.Equal(*tt.wantExpiry) || old.Version() != tt.key.Version()+1 {
				t.Fatalf("old key expires at %v (version %d), want %v", got, old.Version(), tt.wantExpiry)
			}
		})
	}
}

func ptr(t time.Time) *time.Time { return &t }

func TestExpiryChangedRoundTrips(t *testing.T) {
	events, err := activeKey().DecideRotate(domain.RotateKey{NewKeyID: "k2", Grace: time.Hour, SecretHash: "h", LastFour: "abcd"}, meta(later))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		b, err := domain.MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := domain.UnmarshalEvent(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		again, _ := domain.MarshalEvent(got)
		if string(again) != string(b) {
			t.Fatalf("round trip changed the event:\n%s\n%s", b, again)
		}
	}
}
