// Package secretenv knows which environment variables hold lifeboat's
// secrets (the vault passphrase, storage credentials), so that the
// programs lifeboat runs for the operator (hooks) do not inherit them, and
// so that a secret such a program prints anyway never reaches a vault in a
// point's notes.
package secretenv

import (
	"cmp"
	"slices"
	"strings"
)

// names are the secret variables known by name: the passphrase and the S3
// credentials (AWS_* are what the S3 store reads; the SDK's own names are
// included so they are never passed on either).
var names = []string{
	"LIFEBOAT_PASSWORD",
	"LIFEBOAT_NEW_PASSWORD",
	"AWS_SECRET_ACCESS_KEY",
	"AWS_SESSION_TOKEN",
	"AWS_SECURITY_TOKEN",
}

// IsSecret reports whether the environment variable name holds a secret:
// one of the names above, or any LIFEBOAT_ variable whose name says
// SECRET, PASSWORD, PASSPHRASE or TOKEN (LIFEBOAT_PASSWORD_FILE names a
// file, not a secret, but hooks have no need of it either).
func IsSecret(name string) bool {
	if slices.Contains(names, name) {
		return true
	}
	if !strings.HasPrefix(name, "LIFEBOAT_") {
		return false
	}
	for _, w := range []string{"SECRET", "PASSWORD", "PASSPHRASE", "TOKEN"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// Split divides environ ("NAME=value" entries, as os.Environ returns them)
// into the entries to pass on and the values of the secret ones.
func Split(environ []string) (kept, secrets []string) {
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !IsSecret(name) {
			kept = append(kept, kv)
			continue
		}
		if value != "" {
			secrets = append(secrets, value)
		}
	}
	return kept, secrets
}

// Redacted is the text that replaces a secret.
const Redacted = "[redacted]"

// Redact replaces every occurrence of each secret in s. Longer secrets go
// first, so one that contains another is replaced whole.
func Redact(s string, secrets []string) string {
	sorted := slices.Clone(secrets)
	slices.SortFunc(sorted, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, v := range sorted {
		if v != "" {
			s = strings.ReplaceAll(s, v, Redacted)
		}
	}
	return s
}
