package eventstore

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
)

// The cost of authenticated events (docs/performance.md, "Authenticated events"): the MAC
// of one event as keysd appends it and as every reader checks it, and a reader's whole
// decoding of one message with and without the check.

// benchMessage is a KeyCreated as keysd stores it: its subject and its bytes.
func benchMessage(b *testing.B) (string, []byte) {
	meta := domain.Meta{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Actor: domain.Actor{Type: domain.ActorServerKey, ID: "sk-1"},
		RequestID: "0193e4a2-7c1d-7e8f-9a0b-1c2d3e4f5a6b", NewID: func() string { return "0193e4a2-7c1d-7e8f-9a0b-1c2d3e4f5a6c" }}
	e, err := domain.DecideCreateKey(domain.CreateKey{ProjectID: "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d",
		KeyID: "8f14e45f-ceea-467f-a0e6-b1c2d3e4f5a6", UserID: "user-42", Description: "ci deploy key",
		SecretHash: "9b2f0c1e4a7d3b6c8e5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d", LastFour: "9f3a"}, meta)
	if err != nil {
		b.Fatal(err)
	}
	data, err := domain.MarshalEvent(e)
	if err != nil {
		b.Fatal(err)
	}
	return subjects{prefix: "keyledger"}.keyEvent(e), data
}

func benchKey() []byte { return []byte("0123456789abcdef0123456789abcdef") }

// BenchmarkEventMAC: sign is what each append adds, verify what each read adds.
func BenchmarkEventMAC(b *testing.B) {
	subject, data := benchMessage(b)
	m := newEventMAC(benchKey())
	b.Run("sign", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			_ = m.header(subject, data)
		}
	})
	mac := m.header(subject, data)
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if !m.verify(mac, subject, data) {
				b.Fatal("MAC refused")
			}
		}
	})
}

// BenchmarkDecodeMessage: decodeMsg, the one decoding every reader's messages go through,
// without the MAC check (a store without an EventKey) and with it.
func BenchmarkDecodeMessage(b *testing.B) {
	subject, data := benchMessage(b)
	stored := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	plain := &Store{subj: subjects{prefix: "keyledger"}}
	authed := &Store{subj: subjects{prefix: "keyledger"}, mac: newEventMAC(benchKey()), authFrom: 1}
	hdr := nats.Header{HeaderMAC: {authed.mac.header(subject, data)}}
	for _, c := range []struct {
		name string
		s    *Store
	}{{"without-mac", plain}, {"with-mac", authed}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if r := c.s.decodeMsg(2, subject, stored, hdr, data); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		})
	}
}
