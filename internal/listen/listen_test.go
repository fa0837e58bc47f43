package listen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTCP(t *testing.T) {
	ln, scheme, err := TCP("127.0.0.1:0", "", "")
	if err != nil || scheme != "http" {
		t.Fatalf("plain: %v, %q", err, scheme)
	}
	ln.Close()
	bad := filepath.Join(t.TempDir(), "cert.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	if _, _, err := TCP("127.0.0.1:0", bad, bad); err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Fatalf("a bad certificate: %v", err)
	}
	if _, _, err := TCP("256.0.0.1:0", "", ""); err == nil || !strings.Contains(err.Error(), "listening on") {
		t.Fatalf("a bad address: %v", err)
	}
}
