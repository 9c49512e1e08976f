package api

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// This file is the read barrier: a read that must see every change acknowledged before it
// arrived, through any keysd, first learns the stream's last sequence and waits until this
// keysd's projector (and so its key index) has reached it.

// streamPosition learns the stream's last sequence for every read that needs it, with one
// request at a time to NATS, shared by all the reads that arrived before it was sent
// (ReadIndex-style coalescing, as Raft's leaders confirm reads in batches). A read that
// arrives while a request is in flight does not share that one: it may have been answered
// before the write this read must see was stored (the write's 200 may have come after the
// request left), so the read waits for the next request, which is sent once the one in
// flight is answered and therefore after the read arrived; any write acknowledged before the
// read arrived is at or below that answer. Under load a read thus costs at most two request
// times of waiting and no request of its own; NATS sees one request at a time per keysd. A
// read that finds no request in flight sends one itself, from its own goroutine. The request
// is Store.Position (a publish the stream refuses, answered with its last sequence: see
// eventstore/position.go for why that is sound and what it costs).
type streamPosition struct {
	ask     func(ctx context.Context) (uint64, error)
	timeout time.Duration

	mu       sync.Mutex
	inFlight bool
	next     *positionRequest // the request reads arriving now wait for; nil: none yet

	reads, requests atomic.Uint64
}

type positionRequest struct {
	done chan struct{}
	seq  uint64
	err  error
}

// last returns a stream sequence at least as high as every sequence the stream had stored
// when last was called.
func (p *streamPosition) last(ctx context.Context) (uint64, error) {
	p.reads.Add(1)
	p.mu.Lock()
	if !p.inFlight {
		// No request in flight (so none waiting: p.next is nil). This read is alone and asks
		// in its own goroutine: on a quiet keysd a check waits for one NATS round trip and no
		// hand-over to another goroutine and back. Reads arriving meanwhile join p.next, sent
		// when this one is answered.
		p.inFlight = true
		p.requests.Add(1)
		p.mu.Unlock()
		actx, cancel := context.WithTimeout(ctx, p.timeout)
		seq, err := p.ask(actx)
		cancel()
		p.answered()
		return seq, err
	}
	if p.next == nil {
		p.next = &positionRequest{done: make(chan struct{})}
	}
	req := p.next
	p.mu.Unlock()
	select {
	case <-req.done:
		return req.seq, req.err
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for the stream's last sequence: %w", ctx.Err())
	}
}

// answered ends the request in flight and sends the one the reads arriving meanwhile joined.
func (p *streamPosition) answered() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight = false
	if p.next != nil {
		p.send()
	}
}

// send sends the next request, shared by the reads that joined it; p.mu is held. When it is
// answered, the request the reads arriving meanwhile joined is sent in turn. No read's
// context bounds it: it serves them all.
func (p *streamPosition) send() {
	req := p.next
	p.next, p.inFlight = nil, true
	p.requests.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		req.seq, req.err = p.ask(ctx)
		cancel()
		close(req.done)
		p.answered()
	}()
}
