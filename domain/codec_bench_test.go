package domain_test

import (
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// benchEvents are the seeded stream's three kinds of key event, as stored.
func benchEvents(b *testing.B) map[string][]byte {
	created, err := domain.DecideCreateKey(domain.CreateKey{ProjectID: "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d",
		KeyID: "8f14e45f-ceea-467f-a0e6-b1c2d3e4f5a6", UserID: "user-42", Description: "ci deploy key",
		SecretHash: "9b2f0c1e4a7d3b6c8e5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d", LastFour: "9f3a"}, meta(t0))
	if err != nil {
		b.Fatal(err)
	}
	k, _ := domain.EvolveKey(nil, created)
	renamed, _ := k.DecideUpdate(domain.UpdateKey{Description: str("seeded key 42, rename 3")}, meta(later))
	revoked, _ := k.DecideUpdate(domain.UpdateKey{Revoked: boolean(true)}, meta(later))
	out := map[string][]byte{}
	for name, e := range map[string]domain.Event{"KeyCreated": created, "DescriptionChanged": renamed[0], "KeyRevoked": revoked[0]} {
		out[name], _ = domain.MarshalEvent(e)
	}
	return out
}

// BenchmarkUnmarshalEvent measures the decoding that dominates a replay.
func BenchmarkUnmarshalEvent(b *testing.B) {
	raw := benchEvents(b)["KeyCreated"]
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := domain.UnmarshalEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode: each kind of event, copying its strings or sharing the document's.
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"KeyCreated", "DescriptionChanged", "KeyRevoked"} {
		raw := benchEvents(b)[name]
		for _, shared := range []bool{false, true} {
			decode := domain.UnmarshalEvent
			mode := "copy"
			if shared {
				decode, mode = domain.UnmarshalEventShared, "shared"
			}
			b.Run(name+"/"+mode, func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := decode(raw); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkAppendEvent measures the encoding events tail does for every line.
func BenchmarkAppendEvent(b *testing.B) {
	for _, name := range []string{"KeyCreated", "DescriptionChanged"} {
		e, err := domain.UnmarshalEvent(benchEvents(b)[name])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				if buf, err = domain.AppendEvent(buf[:0], e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
