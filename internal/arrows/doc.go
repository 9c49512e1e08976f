// Package arrows holds no code: its test checks that every import between keyledger's
// packages is an arrow of the picture in docs/architecture.md, whose table of allowed
// imports it reads. `make lint` and `make test` run it.
package arrows
