package domain_test

import (
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// BenchmarkUnmarshalEvent measures the decoding that dominates a replay.
func BenchmarkUnmarshalEvent(b *testing.B) {
	created, err := domain.DecideCreateKey(domain.CreateKey{ProjectID: "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d",
		KeyID: "8f14e45f-ceea-467f-a0e6-b1c2d3e4f5a6", UserID: "user-42", Description: "ci deploy key",
		SecretHash: "9b2f0c1e4a7d3b6c8e5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d", LastFour: "9f3a"}, meta(t0))
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := domain.MarshalEvent(created)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := domain.UnmarshalEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}
