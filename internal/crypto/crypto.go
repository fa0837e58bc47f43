// Package crypto holds lifeboat's keys and authenticated encryption: the
// AES-256-GCM seal/open used for every stored object and the Argon2id key
// slots that wrap the vault keys under a passphrase (docs/format.md).
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

// KeySize is the size of every symmetric key.
const KeySize = 32

// Overhead is what Seal adds to a plaintext: nonce and tag.
const Overhead = nonceSize + 16

const nonceSize = 12

// ErrAuth means a ciphertext failed authentication: wrong key or tampered data.
var ErrAuth = errors.New("authentication failed (wrong key or corrupted data)")

// Key is a symmetric key.
type Key [KeySize]byte

// NewRandomKey returns a key from the system's random source.
func NewRandomKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("reading random key: %w", err)
	}
	return k, nil
}

// AEAD seals and opens with one key. It is safe for concurrent use.
type AEAD struct {
	gcm cipher.AEAD
}

// NewAEAD returns an AES-256-GCM sealer for key.
func NewAEAD(key Key) (*AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("creating cipher: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating GCM: %w", err)
	}
	return &AEAD{gcm: gcm}, nil
}

// Seal appends nonce ‖ ciphertext ‖ tag of plaintext to dst and returns it.
func (a *AEAD) Seal(dst, plaintext, aad []byte) []byte {
	n := len(dst)
	need := n + nonceSize + len(plaintext) + a.gcm.Overhead()
	if cap(dst) < need {
		grown := make([]byte, n, need)
		copy(grown, dst)
		dst = grown
	}
	dst = dst[:n+nonceSize]
	nonce := dst[n : n+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		// crypto/rand.Read never fails on supported platforms (Go 1.24+).
		panic(fmt.Sprintf("reading nonce: %v", err))
	}
	return a.gcm.Seal(dst, nonce, plaintext, aad)
}

// SealInPlace seals msg[nonceSize:len(msg)-16] in place: msg holds room
// for the nonce, the plaintext, and room for the tag, and ends up holding
// exactly what Seal would have appended, without copying the plaintext.
func (a *AEAD) SealInPlace(msg, aad []byte) {
	nonce, plain := msg[:nonceSize], msg[nonceSize:len(msg)-a.gcm.Overhead()]
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("reading nonce: %v", err))
	}
	a.gcm.Seal(plain[:0], nonce, plain, aad)
}

// Open authenticates and decrypts a sealed message, appending the plaintext to dst.
func (a *AEAD) Open(dst, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("sealed data of %d bytes is too short: %w", len(sealed), ErrAuth)
	}
	out, err := a.gcm.Open(dst, sealed[:nonceSize], sealed[nonceSize:], aad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// MarshalText encodes the key as base64, as key slots store it.
func (k Key) MarshalText() ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(k[:])), nil
}

// UnmarshalText decodes a base64 key.
func (k *Key) UnmarshalText(b []byte) error {
	n, err := base64.StdEncoding.Decode(k[:], b)
	if err != nil || n != KeySize || base64.StdEncoding.DecodedLen(len(b)) > KeySize+2 {
		return fmt.Errorf("invalid key encoding")
	}
	return nil
}
