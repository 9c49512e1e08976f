package eventstore

import (
	"testing"
	"time"
)

// The bulk reader reads a message's sequence, pending count and time from both forms of the
// reply subject, and leaves anything else to nats.go's Metadata.
func TestParseAckReply(t *testing.T) {
	ts := time.Date(2025, 12, 1, 22, 0, 0, 123456789, time.UTC)
	for _, c := range []struct {
		reply string
		want  ackMeta
		ok    bool
	}{
		{"$JS.ACK.KEYLEDGER.c1.1.1000001.999.1764626400123456789.42", ackMeta{1000001, 42, ts}, true},
		{"$JS.ACK._.ACCHASH.KEYLEDGER.c1.1.77.70.1764626400123456789.0.RANDOM", ackMeta{77, 0, ts}, true},
		{"$JS.ACK.hub.ACCHASH.KEYLEDGER.c1.1.77.70.1764626400123456789.5", ackMeta{77, 5, ts}, true},
		{"$JS.ACK.hub.ACCHASH.KEYLEDGER.c1.1.77.70.1764626400123456789.5.r.future", ackMeta{77, 5, ts}, true},
		{"$JS.ACK.KEYLEDGER.c1.1.x.999.1764626400123456789.42", ackMeta{}, false},
		{"$JS.ACK.KEYLEDGER.c1.1.1.999.1764626400123456789", ackMeta{}, false},
		{"$JS.ACK.a.b.c.d.e.f.g.h", ackMeta{}, false},
		{"_INBOX.abc", ackMeta{}, false},
		{"", ackMeta{}, false},
		{"$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m.n", ackMeta{}, false},
	} {
		got, ok := parseAckReply(c.reply)
		if ok != c.ok || got.seq != c.want.seq || got.pending != c.want.pending || !got.stored.Equal(c.want.stored) {
			t.Errorf("%q: %+v %v, want %+v %v", c.reply, got, ok, c.want, c.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { parseAckReply("$JS.ACK.KEYLEDGER.c1.1.1000001.999.1764626400123456789.42") }); n != 0 {
		t.Errorf("%v allocations a message", n)
	}
}
