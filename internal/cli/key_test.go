package cli_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyList is the output of `vault key list --json`.
type keyList struct {
	Generation int `json:"generation"`
	Keys       []struct {
		Name       string `json:"name"`
		Object     string `json:"object"`
		Generation int    `json:"generation"`
		InUse      bool   `json:"in_use"`
		Named      bool   `json:"named"`
	} `json:"keys"`
}

// TestVaultKeysAndRekey (issue 10, keys): key slots are added, listed and
// removed by name; a removed passphrase is refused; after a rekey, the
// holder of a copy of a removed slot reads the old points and nothing
// written since; backups, restores, prune and copy work across the rekey.
func TestVaultKeysAndRekey(t *testing.T) {
	work := t.TempDir()
	a, b := filepath.Join(work, "a"), filepath.Join(work, "b")
	initVault(t, a, 1<<20)
	const alice = "alice's own passphrase"
	runAs := func(pass string, extra map[string]string, args ...string) result {
		t.Helper()
		env := map[string]string{"LIFEBOAT_PASSWORD": pass}
		for k, v := range extra {
			env[k] = v
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return inProcEnv(ctx, env, args...)
	}
	ok := func(r result) result {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		return r
	}
	list := func(dir, pass string) keyList {
		t.Helper()
		var l keyList
		r := ok(runAs(pass, nil, "--vault", dir, "--json", "vault", "key", "list"))
		if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
			t.Fatalf("key list --json: %v\n%s", err, r)
		}
		return l
	}
	img := filepath.Join(work, "d.raw")
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7 / 4096)
	}
	os.WriteFile(img, data, 0o600)
	backup := func(dir string) string {
		t.Helper()
		return parsePoint(t, ok(runAs(testPassphrase, nil, "--vault", dir, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+img))).ID
	}
	states := map[string]string{}
	p1 := backup(a)
	states[p1] = filepath.Join(work, "p1.raw")
	sparseCopy(t, img, states[p1])
	ok(runAs(testPassphrase, nil, "--vault", b, "-q", "vault", "init", "--copy-of", a))
	ok(runAs(testPassphrase, nil, "-q", "vault", "copy", "--from", a, "--to", b))

	// Add, list, refusals.
	expect(t, "short passphrase", runAs(testPassphrase, map[string]string{"LIFEBOAT_NEW_PASSWORD": "short"}, "--vault", a, "vault", "key", "add", "--name", "alice"), 2, "at least 12")
	expect(t, "bad name", runAs(testPassphrase, map[string]string{"LIFEBOAT_NEW_PASSWORD": alice}, "--vault", a, "vault", "key", "add", "--name", "../x"), 2, "key name")
	ok(runAs(testPassphrase, map[string]string{"LIFEBOAT_NEW_PASSWORD": alice}, "--vault", a, "vault", "key", "add", "--name", "alice"))
	expect(t, "taken name", runAs(testPassphrase, map[string]string{"LIFEBOAT_NEW_PASSWORD": alice + "2"}, "--vault", a, "vault", "key", "add", "--name", "alice"), 2, "exists")
	l := list(a, alice)
	var aliceSlot string
	for _, k := range l.Keys {
		switch k.Name {
		case "alice":
			aliceSlot = k.Object
			if !k.InUse || !k.Named || k.Generation != 1 {
				t.Errorf("alice's slot opened with her passphrase: %+v", k)
			}
		case "default":
			if k.InUse {
				t.Errorf("default slot in use when alice's passphrase was given: %+v", k)
			}
		default:
			t.Errorf("unexpected slot %+v", k)
		}
	}
	if aliceSlot == "" || len(l.Keys) != 2 {
		t.Fatalf("key list: %+v", l)
	}
	// Alice keeps a copy of her slot, then is removed.
	kept, err := os.ReadFile(filepath.Join(a, aliceSlot))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "no such slot", runAs(testPassphrase, nil, "--vault", a, "vault", "key", "remove", "bob"), 8, "alice", "default")
	expect(t, "slot in use", runAs(testPassphrase, nil, "--vault", a, "vault", "key", "remove", "default"), 2, "--force")
	ok(runAs(testPassphrase, nil, "--vault", a, "vault", "key", "remove", "alice"))
	expect(t, "removed passphrase", runAs(alice, nil, "--vault", a, "points"), 3, "wrong passphrase")
	expect(t, "last slot", runAs(testPassphrase, nil, "--vault", a, "vault", "key", "remove", "--force", "default"), 2, "last")

	// Rekey; a new point is sealed with generation 2.
	ok(runAs(testPassphrase, nil, "--vault", a, "vault", "rekey"))
	if l := list(a, testPassphrase); l.Generation != 2 || len(l.Keys) != 1 || l.Keys[0].Name != "default" || l.Keys[0].Generation != 2 {
		t.Fatalf("after rekey: %+v", l)
	}
	if cfg := fileBytes(t, filepath.Join(a, "config")); !strings.Contains(string(cfg), `"version": 3`) {
		t.Errorf("config after rekey is not version 3:\n%s", cfg)
	}
	for i := 0; i < len(data); i += 8192 {
		data[i] ^= 0x5a
	}
	os.WriteFile(img, data, 0o600)
	p2 := backup(a)
	states[p2] = filepath.Join(work, "p2.raw")
	sparseCopy(t, img, states[p2])
	for _, p := range []string{p1, p2} {
		if r := restoreCheck(t, a, p, states[p]); r.code != 0 {
			t.Errorf("restore of %s across the rekey: %s", p[:12], r)
		}
	}
	sealedWith2 := func(dir, object string) bool {
		b := fileBytes(t, filepath.Join(dir, object))
		return len(b) > 4 && string(b[:4]) == "LK\x00\x02"
	}
	if !sealedWith2(a, "points/"+p2) || sealedWith2(a, "points/"+p1) {
		t.Errorf("point %s is not tagged with generation 2, or %s is", p2[:12], p1[:12])
	}

	// Alice plants her kept slot back: her passphrase opens the vault
	// again, reads the point made before the rekey, and nothing after.
	if err := os.WriteFile(filepath.Join(a, aliceSlot), kept, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := restoreCheckPass(t, alice, a, p1, states[p1]); r.code != 0 {
		t.Errorf("old point with the kept slot: %s", r)
	}
	expect(t, "new point with the kept slot", restoreCheckPass(t, alice, a, p2, states[p2]), 3, "generation 2")
	expect(t, "backup with the kept slot", runAs(alice, nil, "--vault", a, "backup", "--machine", "web1", "--disk", "vda="+img), 3, "rekeyed")
	// Packs name their generation at the start of their sealed header.
	gens := map[string]int{}
	for _, pack := range objectFiles(t, a, "packs") {
		b := fileBytes(t, filepath.Join(a, pack))
		h := len(b) - 4 - int(binary.LittleEndian.Uint32(b[len(b)-4:]))
		gens[string(b[h:h+2])]++
	}
	if gens["LK"] == 0 || len(gens) < 2 {
		t.Errorf("pack header tags: %v, want generation 2 on the new packs and none on the old", gens)
	}
	ok(runAs(testPassphrase, nil, "--vault", a, "vault", "key", "remove", "alice"))

	// Copy across the rekey: the copy takes generation 2 and restores p2.
	r := ok(runAs(testPassphrase, nil, "vault", "copy", "--from", a, "--to", b))
	if !strings.Contains(r.stderr, "took data key generation 2") {
		t.Errorf("copy did not say it took the new key:\n%s", r.stderr)
	}
	if l := list(b, testPassphrase); l.Generation != 2 {
		t.Errorf("copy after copying: %+v", l)
	}
	for _, p := range []string{p1, p2} {
		if r := restoreCheck(t, b, p, states[p]); r.code != 0 {
			t.Errorf("restore of %s at the copy: %s", p[:12], r)
		}
	}
	ok(runAs(testPassphrase, nil, "--vault", b, "-q", "verify", "--read-data"))

	// Prune across the rekey, at both vaults.
	for _, dir := range []string{a, b} {
		ok(runAs(testPassphrase, nil, "--vault", dir, "-q", "forget", "--keep-last", "1"))
		ok(runAs(testPassphrase, nil, "--vault", dir, "-q", "prune"))
		ok(runAs(testPassphrase, nil, "--vault", dir, "-q", "verify", "--read-data"))
		if r := restoreCheck(t, dir, p2, states[p2]); r.code != 0 {
			t.Errorf("restore of %s after prune at %s: %s", p2[:12], dir, r)
		}
	}
}

// TestKeyAddPrompts: without --new-password-file or LIFEBOAT_NEW_PASSWORD,
// vault key add asks for the new passphrase twice on the terminal (a
// pseudo-terminal made by script(1)) with echo off, and the slot opens
// with it.
func TestKeyAddPrompts(t *testing.T) {
	scriptBin, err := exec.LookPath("script")
	if err != nil {
		t.Fatalf("script(1) (util-linux) is needed: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "v")
	initVault(t, dir, 0)
	const typed = "typed at the terminal"
	cmd := exec.Command(scriptBin, "-qec", lifeboatBin+" --vault "+dir+" vault key add --name typed", "/dev/null")
	cmd.Env = append(os.Environ(), "LIFEBOAT_PASSWORD="+testPassphrase, "LIFEBOAT_NEW_PASSWORD=")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() }).Stop() // a prompt that never comes ends the read
	var seen strings.Builder
	waitFor := func(prompt string) {
		t.Helper()
		buf := make([]byte, 256)
		for !strings.Contains(seen.String(), prompt) {
			n, err := stdout.Read(buf)
			seen.Write(buf[:n])
			if err != nil {
				t.Fatalf("waiting for %q: %v; got %q", prompt, err, seen.String())
			}
		}
	}
	waitFor("new passphrase: ")
	io.WriteString(stdin, typed+"\n")
	waitFor("the same again: ")
	io.WriteString(stdin, typed+"\n")
	rest, _ := io.ReadAll(stdout)
	seen.Write(rest)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("key add: %v\n%s", err, seen.String())
	}
	if strings.Contains(seen.String(), typed) {
		t.Errorf("the passphrase was echoed: %q", seen.String())
	}
	if r := inProcPass(t, typed, "--vault", dir, "points"); r.code != 0 {
		t.Errorf("the typed passphrase does not open the vault: %s", r)
	}
}

// vault key export: the recovery sheet names the vault, its ID and the
// passphrase once the passphrase opened it; --to writes a new 0600 file
// and refuses an existing one or a link; a wrong passphrase writes nothing.
func TestVaultKeyExport(t *testing.T) {
	work := t.TempDir()
	dir := filepath.Join(work, "vault")
	initVault(t, dir, 0)
	r := mustRun(t, "--vault", dir, "--json", "vault", "key", "export")
	var sheet struct {
		Vault, VaultID, KeySlot, Passphrase string
	}
	var raw map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("--json: %v\n%s", err, r)
	}
	sheet.Vault, sheet.VaultID, sheet.Passphrase = raw["vault"], raw["vault_id"], raw["passphrase"]
	if sheet.Vault != dir || len(sheet.VaultID) != 32 || sheet.Passphrase != testPassphrase {
		t.Fatalf("sheet %+v", raw)
	}
	to := filepath.Join(work, "sheet.txt")
	mustRun(t, "--vault", dir, "vault", "key", "export", "--to", to)
	fi, err := os.Lstat(to)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sheet file: %v, %v", fi, err)
	}
	text, _ := os.ReadFile(to)
	for _, want := range []string{sheet.VaultID, testPassphrase, "--recover-from " + dir} {
		if !strings.Contains(string(text), want) {
			t.Fatalf("the sheet lacks %q:\n%s", want, text)
		}
	}
	pass := map[string]string{"LIFEBOAT_PASSWORD": testPassphrase}
	if r := inProcEnv(context.Background(), pass, "--vault", dir, "vault", "key", "export", "--to", to); r.code == 0 || !strings.Contains(r.stderr, "--to") {
		t.Fatalf("export over an existing file: %s", r)
	}
	link := filepath.Join(work, "link")
	os.Symlink(filepath.Join(work, "elsewhere"), link)
	if r := inProcEnv(context.Background(), pass, "--vault", dir, "vault", "key", "export", "--to", link); r.code == 0 || !strings.Contains(r.stderr, "--to") {
		t.Fatalf("export through a symbolic link: %s", r)
	}
	if _, err := os.Stat(filepath.Join(work, "elsewhere")); err == nil {
		t.Fatal("the sheet was written through the link")
	}
	bad := filepath.Join(work, "bad.txt")
	if r := inProcEnv(context.Background(), map[string]string{"LIFEBOAT_PASSWORD": "not the passphrase at all"}, "--vault", dir, "vault", "key", "export", "--to", bad); r.code == 0 {
		t.Fatalf("export with a wrong passphrase: %s", r)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Fatal("a wrong passphrase wrote a sheet")
	}
}
