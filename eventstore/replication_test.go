package eventstore

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/internal/testenv"
)

// A dead-letter stream that cannot be had (here: another stream holds its subjects, as an
// R1 dead-letter stream on a node that is down cannot be reached) does not stop the store
// from opening; it says so in a warning.
func TestOpenWithoutTheDeadLetterStream(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	nc := ns.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: "SQUATTER", Subjects: []string{"keyledger_dlq.>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	s, err := Open(t.Context(), nc, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatalf("Open without a dead-letter stream: %v", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "KEYLEDGER_DLQ") {
		t.Errorf("no warning about the dead-letter stream:\n%s", logs)
	}
	if s.Replicas() != 1 || s.Clustered() {
		t.Errorf("Replicas %d, Clustered %v on a single server", s.Replicas(), s.Clustered())
	}
	h, err := s.StreamHealth(t.Context())
	if err != nil || !h.Quorum() || h.Replicas != 1 {
		t.Errorf("StreamHealth = %+v, %v", h, err)
	}
	if _, err := s.SetAside(t.Context(), DeadLetter{Seq: 1, Consumer: "test", Reason: "x"}); !IsUnavailable(err) {
		t.Errorf("SetAside without a dead-letter stream: %v", err)
	}
}

// JetStream's "no leader, no quorum, offline" answers are an unavailable event store, never
// a concurrency conflict; "wrong last sequence" is the conflict.
func TestNoQuorumIsUnavailable(t *testing.T) {
	for code, want := range map[jetstream.ErrorCode]bool{
		10008: true, 10009: true, 10118: true, 10194: true, 10202: true,
		jetstream.JSErrCodeStreamWrongLastSequence: false, jetstream.JSErrCodeStreamWrongLastSequenceConstant: false,
		jetstream.JSErrCodeMessageNotFound: false,
	} {
		err := fmt.Errorf("publish: %w", &jetstream.APIError{Code: 503, ErrorCode: code, Description: "x"})
		if got := IsUnavailable(err); got != want {
			t.Errorf("IsUnavailable(code %d) = %v, want %v", code, got, want)
		}
		if want && isWrongLastSequence(err) {
			t.Errorf("code %d is taken for a concurrency conflict", code)
		}
	}
	if !errors.Is(unavailableIf(&jetstream.APIError{ErrorCode: 10008}), ErrUnavailable) {
		t.Error("a setup failure for want of a quorum is not ErrUnavailable")
	}
	if errors.Is(unavailableIf(errors.New("bad config")), ErrUnavailable) {
		t.Error("a setup failure that waiting cannot cure is ErrUnavailable")
	}
}
