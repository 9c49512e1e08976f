package domain

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
)

// SealNonceBytes is the size of the nonce Seal takes: AES-GCM's 96 bits, which must be
// random (or otherwise never repeated) for every sealing.
const SealNonceBytes = 12

// ErrUnsealable: sealed bytes that were not sealed by this deployment's secret for this
// context, or were changed since.
var ErrUnsealable = errors.New("sealed record does not open with this secret")

func newRecordCipher(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("record cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// Seal encrypts and authenticates plaintext with AES-256-GCM under a subkey of the
// server-side secret, bound to context (which is authenticated, not encrypted): what keysd
// keeps outside its own memory and must not show, such as a response holding a new key's
// secret, is stored only sealed. The nonce is prepended to the result.
func (h *Hasher) Seal(nonce, plaintext, context []byte) ([]byte, error) {
	if len(nonce) != SealNonceBytes {
		return nil, fmt.Errorf("seal: nonce of %d bytes, want %d", len(nonce), SealNonceBytes)
	}
	out := append([]byte(nil), nonce...)
	return h.records.Seal(out, nonce, plaintext, context), nil
}

// Open returns what Seal sealed with the same context, or ErrUnsealable.
func (h *Hasher) Open(sealed, context []byte) ([]byte, error) {
	if len(sealed) < SealNonceBytes {
		return nil, ErrUnsealable
	}
	plain, err := h.records.Open(nil, sealed[:SealNonceBytes], sealed[SealNonceBytes:], context)
	if err != nil {
		return nil, ErrUnsealable
	}
	return plain, nil
}
