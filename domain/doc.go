// Package domain holds keyledger's aggregates: user API keys and the projects that own them.
//
// It is pure: decisions take the current state, a command and everything else they need
// (the time, new ids, the credential hasher) as arguments and return events or a domain
// error; Evolve folds events into state. Nothing here talks to NATS, SQL or HTTP, reads a
// clock or draws randomness, so every rule is a table test that runs in microseconds.
package domain
