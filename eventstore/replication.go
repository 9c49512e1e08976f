package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Replication: what the stream's leader says of the stream's replicas, so that keysd can
// report its replica count at start, tell readiness whether a write can be stored now (a
// leader with a quorum of current replicas), and count leader changes.

// StreamHealth is the event stream's replication as its leader reports it.
type StreamHealth struct {
	// LastSeq is the stream's last sequence.
	LastSeq uint64
	// Replicas is the stream's configured replica count.
	Replicas int
	// Leader names the server leading the stream ("" on a server that is not clustered).
	Leader string
	// Current is how many replicas, the leader included, are up to date with the leader.
	Current int
	// Clustered tells whether the server keysd is connected to is part of a cluster.
	Clustered bool
}

// Quorum tells whether enough replicas are current for the leader to store a write.
func (h StreamHealth) Quorum() bool { return h.Current >= h.Replicas/2+1 }

// peerSilence is how long a follower may go unheard before it counts as not current: a peer
// the leader has not heard from within a few of its heartbeats (one a second or so) cannot
// acknowledge a write either, whatever the leader last recorded of it.
const peerSilence = 5 * time.Second

// StreamHealth asks the stream's leader how the stream is replicated. No leader, or a leader
// without a quorum of current replicas, is ErrUnavailable: a write would not be stored.
func (s *Store) StreamHealth(ctx context.Context) (StreamHealth, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	str, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return StreamHealth{}, fmt.Errorf("%w: stream %s: %w", ErrUnavailable, s.cfg.Stream, err)
	}
	info := str.CachedInfo()
	h := StreamHealth{
		LastSeq: info.State.LastSeq, Replicas: max(1, info.Config.Replicas), Current: 1,
		Clustered: s.nc.ConnectedClusterName() != "",
	}
	if info.Cluster != nil {
		h.Leader = info.Cluster.Leader
		for _, p := range info.Cluster.Replicas {
			if p != nil && p.Current && !p.Offline && p.Active < peerSilence {
				h.Current++
			}
		}
		if h.Leader == "" && h.Replicas > 1 {
			return h, fmt.Errorf("%w: stream %s has no leader", ErrUnavailable, s.cfg.Stream)
		}
	}
	if !h.Quorum() {
		return h, fmt.Errorf("%w: stream %s: %d of %d replicas current, no quorum", ErrUnavailable, s.cfg.Stream, h.Current, h.Replicas)
	}
	return h, nil
}

// Replicas is the event stream's replica count as it was when the store opened it: the
// configured count for a stream the store created, the operator's for one it adopted.
func (s *Store) Replicas() int { return s.replicas }

// Clustered tells whether the server the store is connected to is part of a NATS cluster.
func (s *Store) Clustered() bool { return s.nc.ConnectedClusterName() != "" }

// LeaderChanges counts the stream leader elections this store has been told of (JetStream's
// leader-elected advisories for the stream) since it opened.
func (s *Store) LeaderChanges() uint64 { return s.leaderChanges.Load() }

// watchLeader counts and logs the stream's leader elections. The advisory is a plain NATS
// message in the account, so watching it costs no JetStream state; nats.go renews the
// subscription after a reconnect.
func (s *Store) watchLeader() (*nats.Subscription, error) {
	return s.nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."+s.cfg.Stream, func(m *nats.Msg) {
		s.leaderChanges.Add(1)
		s.log.Info("event store: the stream elected a leader", "stream", s.cfg.Stream, "advisory", string(m.Data))
	})
}

// Disconnects counts the times the store's NATS connection was lost since the store opened.
func (s *Store) Disconnects() uint64 { return s.disconnects.Load() }

// countDisconnects wraps the connection's disconnect handler, keeping the one its owner set.
func (s *Store) countDisconnects() {
	prev := s.nc.Opts.DisconnectedErrCB
	s.nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		s.disconnects.Add(1)
		if prev != nil {
			prev(c, err)
		}
	})
}

// unavailableCodes are JetStream's answers that mean "not now": the cluster has no leader or
// quorum for the request, or the stream is offline. Retrying later is the remedy; they are
// never a concurrency conflict.
var unavailableCodes = map[jetstream.ErrorCode]bool{
	10008: true, // JSClusterNotAvailErr: JetStream system temporarily unavailable
	10009: true, // JSClusterNotLeaderErr: JetStream cluster can not handle request
	10006: true, // JSClusterNotActiveErr
	10007: true, // JSClusterNotAssignedErr
	10005: true, // JSClusterNoPeersErrF: no suitable peers for placement
	10023: true, // JSInsufficientResourcesErr
	10118: true, // JSStreamOfflineErr
	10119: true, // JSConsumerOfflineErr
	10194: true, // JSStreamOfflineReasonErrF
	10195: true, // JSConsumerOfflineReasonErrF
	10202: true, // JSClusterServerMemberChangeInflightErr
}

// isNoQuorum reports a JetStream error that means the cluster cannot serve the request now.
func isNoQuorum(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return unavailableCodes[apiErr.ErrorCode]
	}
	return false
}
