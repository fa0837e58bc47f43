package job_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/job"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vault"
)

// A verify of a sound vault passes; once a pack is damaged on disk it
// returns the report naming the pack and ErrProblemsFound counting the
// problems (what the CLI maps to exit 5 and an agent's job fails with).
func TestRunVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	vdir := filepath.Join(dir, "vault")
	v := newDirVault(t, vdir)
	img := filepath.Join(dir, "d.raw")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	os.WriteFile(img, data, 0o600)
	b := job.Backup{Machine: "m", Vault: vdir, Consistency: "crash", Source: job.Source{Disks: []job.Disk{{Name: "d", Path: img}}}}
	if _, err := job.RunBackup(ctx, v, b, job.Env{}); err != nil {
		t.Fatal(err)
	}
	var progressed bool
	env := job.Env{VerifyProgress: func(done, total int64) { progressed = progressed || done > 0 }}
	rep, err := job.RunVerify(ctx, v, job.Verify{Vault: vdir, ReadData: true}, env)
	if err != nil || len(rep.Problems) != 0 || rep.Points != 1 || !progressed {
		t.Fatalf("verify of a sound vault: %+v, %v (progress reported: %v)", rep, err, progressed)
	}
	pack := testenv.DamagePack(t, vdir)
	rep, err = job.RunVerify(ctx, v, job.Verify{Vault: vdir, ReadData: true}, job.Env{})
	if !errors.Is(err, job.ErrProblemsFound) || rep == nil || len(rep.Problems) == 0 ||
		err.Error() != fmt.Sprintf("verify found problems: %d problem(s)", len(rep.Problems)) || !strings.Contains(rep.Problems[0].Object, filepath.Base(pack)) {
		t.Fatalf("verify of a damaged pack: %+v, %v", rep, err)
	}
}

// newDirVault is a new vault in the directory dir, with a cheap key
// derivation.
func newDirVault(t testing.TB, dir string) *vault.Vault {
	t.Helper()
	os.Mkdir(dir, 0o700)
	store, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(context.Background(), store, []byte("pw"), vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
