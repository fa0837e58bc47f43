package job

import (
	"errors"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/vault"
)

func TestVaultInitOptions(t *testing.T) {
	base := vault.Options{CacheDir: "/cache"}
	o, err := VaultInit{ChunkSize: "1M", Compression: "zstd", SoftDelete: "14d", Lock: "30d"}.Options(base)
	if err != nil || o.ChunkSize != 1<<20 || o.Compression != "zstd" || o.SoftDelete != 14*24*time.Hour || o.CacheDir != "/cache" ||
		o.Lock == nil || o.Lock.Mode != "compliance" || o.Lock.Seconds != 30*24*3600 {
		t.Fatalf("options %+v (lock %+v), %v", o, o.Lock, err)
	}
	o, err = VaultInit{SoftDelete: "0", Lock: "12h", LockMode: "governance"}.Options(base)
	if err != nil || o.ChunkSize != 0 || o.SoftDelete != 0 || o.Lock.Mode != "governance" || o.Lock.Seconds != 12*3600 {
		t.Fatalf("options %+v (lock %+v), %v", o, o.Lock, err)
	}
	for _, c := range []struct {
		s           VaultInit
		field, want string
	}{
		{VaultInit{ChunkSize: "zz", SoftDelete: "zz"}, "chunk_size", ""},
		{VaultInit{ChunkSize: "1K", SoftDelete: "0"}, "chunk_size", "chunk size 1024 must be a power of two"},
		{VaultInit{SoftDelete: "soon"}, "soft_delete", "--soft-delete: "},
		{VaultInit{SoftDelete: "1.5s"}, "soft_delete", "--soft-delete 1.5s: give whole seconds"},
		{VaultInit{SoftDelete: "0", LockMode: "compliance"}, "lock", "--lock-mode needs --lock"},
		{VaultInit{SoftDelete: "0", Lock: "0s"}, "lock", `--lock "0s": want a period of at least 1s`},
		{VaultInit{SoftDelete: "0", Lock: "1d", LockMode: "x"}, "lock", `--lock-mode "x": want compliance or governance`},
	} {
		_, err := c.s.Options(base)
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Field != c.field || !strings.HasPrefix(ie.Reason, c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want %s: %q…", c.s, err, c.field, c.want)
		}
	}
}
