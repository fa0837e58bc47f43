// Package pgtest runs a throwaway PostgreSQL server for tests: initdb into a
// temporary directory as the postgres user (PostgreSQL refuses to run as
// root), the server listening on a unix socket in that directory only, and
// a fresh database per test.
//
//	dsn := pgtest.Database(t) // postgres://postgres@/t_3?host=/tmp/pg123
//
// One server serves every test of a test binary; it stops when the binary
// calls Stop (from TestMain). The binaries come from Debian's postgresql
// package (/usr/lib/postgresql/N/bin; scripts/deps.sh installs it). Without
// them the test is skipped, unless CI=true or LIFEBOAT_REQUIRE_PG=1 is set,
// in which case it fails: CI must not silently skip.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

var server struct {
	once sync.Once
	dir  string
	cmd  *exec.Cmd
	err  error
	n    int
	mu   sync.Mutex
}

func required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("LIFEBOAT_REQUIRE_PG") == "1"
}

// binDir finds the newest PostgreSQL's bin directory.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql; scripts/deps.sh does)")
}

func start() error {
	bin, err := binDir()
	if err != nil {
		return err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("no postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "lifeboat-pg-")
	if err != nil {
		return err
	}
	server.dir = dir
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setpgid: true}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = cred
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200")
	cmd.SysProcAttr = cred
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	server.cmd = cmd
	// Ready when it accepts a connection.
	deadline := time.Now().Add(60 * time.Second)
	for {
		db, err := sql.Open("pgx", DSN("postgres"))
		if err == nil {
			err = db.Ping()
			db.Close()
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			return fmt.Errorf("postgres did not accept connections in 60 s: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DSN is the URL of database name on the test server.
func DSN(name string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=5432&sslmode=disable", name, server.dir)
}

// Database returns the URL of a new, empty database for t, starting the
// server on first use.
func Database(t testing.TB) string {
	t.Helper()
	server.once.Do(func() { server.err = start() })
	if server.err != nil {
		if required() {
			t.Fatalf("PostgreSQL is required here (CI=true or LIFEBOAT_REQUIRE_PG=1): %v", server.err)
		}
		t.Skipf("PostgreSQL not available: %v", server.err)
	}
	server.mu.Lock()
	server.n++
	name := fmt.Sprintf("t_%d", server.n)
	server.mu.Unlock()
	db, err := sql.Open("pgx", DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	return DSN(name)
}

// Stop stops the server if one was started and removes its files. Call it
// from TestMain after m.Run.
func Stop() {
	if server.cmd != nil && server.cmd.Process != nil {
		server.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		done := make(chan struct{})
		go func() { server.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-server.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if server.dir != "" {
		os.RemoveAll(server.dir)
	}
}
