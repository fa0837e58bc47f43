package secrets

import (
	"testing"

	"lifeboat/internal/testenv"
)

// FuzzCredentialsFile: the credentials file is refused, or every
// credential read from it is one Put would have kept.
func FuzzCredentialsFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"vaults":{"offsite":{"password":"pw","s3":{"AWS_ACCESS_KEY_ID":"k","AWS_SECRET_ACCESS_KEY":"s"}}}}`))
	f.Add([]byte(`{"version":1,"vaults":{"x":{"password":"a\nb","s3":{"PATH":"/tmp"}}}}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var all map[string]Credential
		var err error
		testenv.CheckAlloc(t, len(data), 64, 0, func() { all, err = parseFile(data) })
		if err != nil {
			return
		}
		for name, c := range all {
			if err := c.Validate(); err != nil {
				t.Fatalf("credential of %q read though Put would refuse it: %v", name, err)
			}
		}
	})
}

// FuzzEnvFile: an --s3-key-file is refused or gives only S3 settings
// lifeboat reads.
func FuzzEnvFile(f *testing.F) {
	f.Add([]byte("# keys\nexport AWS_ACCESS_KEY_ID=k\nAWS_SECRET_ACCESS_KEY=\"s\"\n\n"))
	f.Add([]byte("PATH=/tmp\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var env map[string]string
		var err error
		testenv.CheckAlloc(t, len(data), 64, 0, func() { env, err = ParseEnvFile(data) })
		if err != nil {
			return
		}
		for k := range env {
			if !isS3Key(k) {
				t.Fatalf("setting %q read", k)
			}
		}
	})
}
