package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

var (
	t0      = time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	revoked = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	later   = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
)

func seqIDs() func() string {
	n := 0
	return func() string { n++; return "event-" + string(rune('a'+n)) }
}

func meta(at time.Time) domain.Meta {
	return domain.Meta{Time: at, Actor: domain.Actor{Type: domain.ActorServerKey, ID: "sk-1"}, RequestID: "r1", NewID: seqIDs()}
}

func activeKey() *domain.Key {
	return domain.RestoreKey(domain.KeySnapshot{
		ID: "k1", ProjectID: "p1", UserID: "u1", Description: "old", CreatedAt: t0, Version: 1,
	})
}

func revokedKey() *domain.Key {
	s := activeKey().Snapshot()
	at := revoked
	s.RevokedAt, s.Version = &at, 2
	return domain.RestoreKey(s)
}

func expiredKey() *domain.Key {
	s := activeKey().Snapshot()
	exp := t0.Add(time.Hour)
	s.ExpiresAt = &exp
	return domain.RestoreKey(s)
}

func str(s string) *string { return &s }
func boolean(b bool) *bool { return &b }

// Every PATCH rule of CONTRACT section 3 is a row here.
func TestDecideUpdate(t *testing.T) {
	tests := []struct {
		name      string
		key       *domain.Key
		cmd       domain.UpdateKey
		wantTypes []domain.EventType
		wantErr   error
		wantDesc  string
		wantRevAt *time.Time
	}{
		{name: "empty PATCH emits nothing", key: activeKey(), cmd: domain.UpdateKey{}, wantDesc: "old"},
		{name: "new description emits DescriptionChanged", key: activeKey(), cmd: domain.UpdateKey{Description: str("new")},
			wantTypes: []domain.EventType{domain.TypeDescriptionChanged}, wantDesc: "new"},
		{name: "equal description emits nothing", key: activeKey(), cmd: domain.UpdateKey{Description: str("old")}, wantDesc: "old"},
		{name: "empty description is a change", key: activeKey(), cmd: domain.UpdateKey{Description: str("")},
			wantTypes: []domain.EventType{domain.TypeDescriptionChanged}, wantDesc: ""},
		{name: "revoke active key emits KeyRevoked at server time", key: activeKey(), cmd: domain.UpdateKey{Revoked: boolean(true)},
			wantTypes: []domain.EventType{domain.TypeKeyRevoked}, wantDesc: "old", wantRevAt: &later},
		{name: "second revoke emits nothing and keeps the first timestamp", key: revokedKey(), cmd: domain.UpdateKey{Revoked: boolean(true)},
			wantDesc: "old", wantRevAt: &revoked},
		{name: "revoked false on active key is a no-op", key: activeKey(), cmd: domain.UpdateKey{Revoked: boolean(false)}, wantDesc: "old"},
		{name: "revoked false on revoked key is a conflict", key: revokedKey(), cmd: domain.UpdateKey{Revoked: boolean(false)},
			wantErr: domain.ErrKeyAlreadyRevoked},
		{name: "revoked false with a rename on a revoked key applies nothing", key: revokedKey(),
			cmd: domain.UpdateKey{Description: str("new"), Revoked: boolean(false)}, wantErr: domain.ErrKeyAlreadyRevoked},
		{name: "both fields emit both events, rename first", key: activeKey(),
			cmd:       domain.UpdateKey{Description: str("new"), Revoked: boolean(true)},
			wantTypes: []domain.EventType{domain.TypeDescriptionChanged, domain.TypeKeyRevoked}, wantDesc: "new", wantRevAt: &later},
		{name: "rename of a revoked key is allowed", key: revokedKey(), cmd: domain.UpdateKey{Description: str("new")},
			wantTypes: []domain.EventType{domain.TypeDescriptionChanged}, wantDesc: "new", wantRevAt: &revoked},
		{name: "expired key can be renamed", key: expiredKey(), cmd: domain.UpdateKey{Description: str("new")},
			wantTypes: []domain.EventType{domain.TypeDescriptionChanged}, wantDesc: "new"},
		{name: "expired key can be revoked", key: expiredKey(), cmd: domain.UpdateKey{Revoked: boolean(true)},
			wantTypes: []domain.EventType{domain.TypeKeyRevoked}, wantDesc: "old", wantRevAt: &later},
		{name: "precondition on the current version applies the change", key: activeKey(),
			cmd:       domain.UpdateKey{Description: str("new"), Precondition: func(v int) bool { return v == 1 }},
			wantTypes: []domain.EventType{domain.TypeDescriptionChanged}, wantDesc: "new"},
		{name: "precondition on another version applies nothing", key: activeKey(),
			cmd:     domain.UpdateKey{Description: str("new"), Revoked: boolean(true), Precondition: func(v int) bool { return v == 2 }},
			wantErr: domain.ErrPreconditionFailed},
		{name: "a no-op is still refused by a failed precondition", key: activeKey(),
			cmd: domain.UpdateKey{Precondition: func(int) bool { return false }}, wantErr: domain.ErrPreconditionFailed},
		{name: "description over 4096 bytes is invalid", key: activeKey(), cmd: domain.UpdateKey{Description: str(strings.Repeat("a", 4097))},
			wantErr: &domain.ValidationError{}},
		{name: "description of exactly 4096 bytes is fine", key: activeKey(), cmd: domain.UpdateKey{Description: str(strings.Repeat("é", 2048))},
			wantTypes: []domain.EventType{domain.TypeDescriptionChanged}, wantDesc: strings.Repeat("é", 2048)},
		{name: "description with U+0000 is invalid", key: activeKey(), cmd: domain.UpdateKey{Description: str("a\x00b")}, wantErr: &domain.ValidationError{}},
		{name: "description with invalid UTF-8 is invalid", key: activeKey(), cmd: domain.UpdateKey{Description: str("a\xffb")}, wantErr: &domain.ValidationError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := tt.key.DecideUpdate(tt.cmd, meta(later))
			if tt.wantErr != nil {
				var ve *domain.ValidationError
				if errors.As(tt.wantErr, &ve) {
					if !errors.As(err, &ve) {
						t.Fatalf("error %v, want a ValidationError", err)
					}
				} else if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if len(events) != 0 {
					t.Fatalf("%d events with an error", len(events))
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			var types []domain.EventType
			key := tt.key
			for i, e := range events {
				types = append(types, e.Type)
				if e.Version != tt.key.Version()+i+1 {
					t.Errorf("event %d version %d, want %d", i, e.Version, tt.key.Version()+i+1)
				}
				if e.Actor.ID != "sk-1" || e.RequestID != "r1" || e.KeyID != "k1" || e.ProjectID != "p1" || e.UserID != "u1" {
					t.Errorf("event %d envelope %+v", i, e)
				}
				if key, err = domain.EvolveKey(key, e); err != nil {
					t.Fatalf("evolve: %v", err)
				}
			}
			if len(types) != len(tt.wantTypes) {
				t.Fatalf("events %v, want %v", types, tt.wantTypes)
			}
			for i := range types {
				if types[i] != tt.wantTypes[i] {
					t.Fatalf("events %v, want %v", types, tt.wantTypes)
				}
			}
			s := key.Snapshot()
			if s.Description != tt.wantDesc {
				t.Errorf("description %q, want %q", s.Description, tt.wantDesc)
			}
			switch {
			case tt.wantRevAt == nil && s.RevokedAt != nil:
				t.Errorf("revoked at %v, want not revoked", s.RevokedAt)
			case tt.wantRevAt != nil && (s.RevokedAt == nil || !s.RevokedAt.Equal(*tt.wantRevAt)):
				t.Errorf("revoked at %v, want %v", s.RevokedAt, tt.wantRevAt)
			}
		})
	}
}

func TestDescriptionChangedCarriesOldAndNew(t *testing.T) {
	events, err := activeKey().DecideUpdate(domain.UpdateKey{Description: str("new")}, meta(later))
	if err != nil {
		t.Fatal(err)
	}
	d, ok := events[0].Data.(domain.DescriptionChanged)
	if !ok || d.Old != "old" || d.New != "new" {
		t.Fatalf("data %+v", events[0].Data)
	}
}

func TestCheck(t *testing.T) {
	exp := t0.Add(time.Hour)
	both := revokedKey().Snapshot()
	both.ExpiresAt = &exp
	tests := []struct {
		name string
		key  *domain.Key
		now  time.Time
		want error
	}{
		{"active", activeKey(), later, nil},
		{"revoked", revokedKey(), later, domain.ErrKeyRevoked},
		{"expired", expiredKey(), later, domain.ErrKeyExpired},
		{"not yet expired", expiredKey(), t0, nil},
		{"expiry instant counts as expired", expiredKey(), exp, domain.ErrKeyExpired},
		{"revoked and expired is revoked", domain.RestoreKey(both), later, domain.ErrKeyRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.key.Check(tt.now); !errors.Is(err, tt.want) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEvolveRejectsOutOfOrderEvents(t *testing.T) {
	k := activeKey()
	events, _ := k.DecideUpdate(domain.UpdateKey{Description: str("x")}, meta(later))
	e := events[0]
	e.Version = 5
	if _, err := domain.EvolveKey(k, e); !errors.Is(err, domain.ErrInvalidEvent) {
		t.Fatalf("gap in versions: %v", err)
	}
	e = events[0]
	e.KeyID = "other"
	if _, err := domain.EvolveKey(k, e); !errors.Is(err, domain.ErrInvalidEvent) {
		t.Fatalf("event of another key: %v", err)
	}
}
