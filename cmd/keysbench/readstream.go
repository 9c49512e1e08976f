package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/eventstore"
)

// readStreamSummary is the JSON line read-stream prints when done.
type readStreamSummary struct {
	Messages          int     `json:"messages"`
	Bytes             int     `json:"bytes"`
	Seconds           float64 `json:"seconds"`
	CPUSeconds        float64 `json:"cpu_seconds"`
	MessagesPerSecond float64 `json:"messages_per_second"`
}

// runReadStream reads the event stream with a plain ordered consumer and does nothing with
// the messages: what the stream itself allows a reader on this machine, the ceiling that
// keysctl replay, verify and events tail are measured against (docs/performance.md). It
// pulls as many messages at a time as keysctl's bulk reader (eventstore.ReadPull) and reads
// nothing of a message but its data's length: it knows it is done by the count of messages
// the consumer had pending when created.
func runReadStream(fs *flag.FlagSet, conn *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int {
	filter := fs.String("filter", "", "read only this subject filter (default: the key events, what keysctl events tail reads)")
	all := fs.Bool("all", false, "read every message of the stream, as keysctl replay and verify do (no subject filter)")
	pull := fs.Int("pull", eventstore.ReadPull, "messages the consumer asks for at a time (jetstream.PullMaxMessages)")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		c := *conn
		c.Name = "keysbench read-stream"
		nc, err := eventstore.Connect(c)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench read-stream: %v\n", err)
			return 1
		}
		defer nc.Close()
		store, err := eventstore.Open(ctx, nc, eventstore.Config{Timeout: 30 * time.Second})
		if err != nil {
			fmt.Fprintf(stderr, "keysbench read-stream: %v\n", err)
			return 1
		}
		cfg := jetstream.OrderedConsumerConfig{}
		switch {
		case *all && *filter != "":
			fmt.Fprintln(stderr, "keysbench read-stream: give --filter or --all, not both")
			return 2
		case *filter != "":
			cfg.FilterSubjects = []string{*filter}
		case !*all:
			cfg.FilterSubjects = []string{store.KeySubjectFilter("")}
		}
		start, cpu0 := time.Now(), cpuTime()
		cons, err := store.JetStream().OrderedConsumer(ctx, store.StreamName(), cfg)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench read-stream: %v\n", err)
			return 1
		}
		var want uint64
		if info := cons.CachedInfo(); info != nil {
			want = info.NumPending
		}
		var sum readStreamSummary
		done := make(chan struct{})
		var cc jetstream.ConsumeContext
		if want > 0 {
			cc, err = cons.Consume(func(m jetstream.Msg) {
				sum.Messages++
				sum.Bytes += len(m.Data())
				if uint64(sum.Messages) == want {
					close(done)
				}
			}, jetstream.PullMaxMessages(*pull))
			if err != nil {
				fmt.Fprintf(stderr, "keysbench read-stream: %v\n", err)
				return 1
			}
			select {
			case <-done:
			case <-ctx.Done():
			}
			cc.Stop()
		}
		sum.Seconds = time.Since(start).Seconds()
		sum.CPUSeconds = (cpuTime() - cpu0).Seconds()
		sum.MessagesPerSecond = math.Round(float64(sum.Messages) / sum.Seconds)
		out, _ := json.Marshal(sum)
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
