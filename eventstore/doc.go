// Package eventstore is keyledger's append-only event store on NATS JetStream. It is the
// only package that knows the stream, its subjects and its headers.
//
// One stream holds every event. A key's events live on
//
//	<prefix>.key.<project_id>.<key_id>.<EventType>
//
// and a project's on <prefix>.project.<project_id>.<EventType>, so a consumer can filter on a
// project, a key or an event type with plain subject wildcards. Appends to one key carry the
// expected last stream sequence of <prefix>.key.<project>.<key>.* (per-key optimistic
// concurrency), an event id as Nats-Msg-Id (de-duplication of retries), and are committed as
// one atomic batch when a command emits several events.
package eventstore
