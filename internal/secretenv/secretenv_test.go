package secretenv

import (
	"slices"
	"testing"
)

func TestSplitAndRedact(t *testing.T) {
	env := []string{"PATH=/bin", "LIFEBOAT_PASSWORD=pw-long", "AWS_SECRET_ACCESS_KEY=sk", "AWS_ACCESS_KEY_ID=AKIA",
		"LIFEBOAT_S3_SECRET_KEY=other", "LIFEBOAT_PASSWORD_FILE=/etc/pw", "LIFEBOAT_VAULT=/srv/v", "AWS_SESSION_TOKEN=", "LIFEBOAT_MACHINE=m"}
	kept, secrets := Split(env)
	if want := []string{"PATH=/bin", "AWS_ACCESS_KEY_ID=AKIA", "LIFEBOAT_VAULT=/srv/v", "LIFEBOAT_MACHINE=m"}; !slices.Equal(kept, want) {
		t.Fatalf("kept %q, want %q", kept, want)
	}
	if want := []string{"pw-long", "sk", "other", "/etc/pw"}; !slices.Equal(secrets, want) {
		t.Fatalf("secrets %q, want %q", secrets, want)
	}
	// The longer secret is replaced whole, not cut by a shorter one inside it.
	if got := Redact("a pw-long b pw c", []string{"pw", "pw-long"}); got != "a [redacted] b [redacted] c" {
		t.Fatalf("Redact: %q", got)
	}
}
