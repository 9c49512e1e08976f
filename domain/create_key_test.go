package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

func TestDecideCreateKey(t *testing.T) {
	exp := later
	tests := []struct {
		name    string
		cmd     domain.CreateKey
		wantErr bool
	}{
		{"minimal", domain.CreateKey{UserID: "u"}, false},
		{"with expiry and public", domain.CreateKey{UserID: "u", ExpiresAt: &exp, IsPublic: true, Description: "d"}, false},
		{"empty user id", domain.CreateKey{UserID: ""}, true},
		{"128-character user id", domain.CreateKey{UserID: strings.Repeat("ü", 128)}, false},
		{"129-character user id", domain.CreateKey{UserID: strings.Repeat("u", 129)}, true},
		{"user id with NUL", domain.CreateKey{UserID: "a\x00"}, true},
		{"description too long", domain.CreateKey{UserID: "u", Description: strings.Repeat("x", 4097)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cmd.ProjectID, tt.cmd.KeyID = "p1", "k1"
			e, err := domain.DecideCreateKey(tt.cmd, meta(t0.Add(123456789*time.Nanosecond)))
			var ve *domain.ValidationError
			if tt.wantErr {
				if !errors.As(err, &ve) {
					t.Fatalf("error %v, want ValidationError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			k, err := domain.EvolveKey(nil, e)
			if err != nil {
				t.Fatal(err)
			}
			s := k.Snapshot()
			if s.Version != 1 || s.UserID != tt.cmd.UserID || !s.CreatedAt.Equal(t0.Add(123*time.Millisecond)) {
				t.Fatalf("snapshot %+v (created_at truncated to milliseconds)", s)
			}
		})
	}
}
