package replicate

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/replica"
)

// A replica server refuses settings that do not go together, a missing
// token file and an address in use, all as invalid; with good settings it
// serves the site until its context ends.
func TestReplicaServer(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	for _, c := range []struct {
		s    ReplicaServer
		want string
	}{
		{ReplicaServer{Dir: dir, TokenFile: tokenFile}, "--listen and --dir are required"},
		{ReplicaServer{Listen: "127.0.0.1:0", TokenFile: tokenFile}, "--listen and --dir are required"},
		{ReplicaServer{Listen: "127.0.0.1:0", Dir: dir, TokenFile: tokenFile, CertFile: "c.pem"}, "--cert and --key go together"},
		{ReplicaServer{Listen: "127.0.0.1:0", Dir: dir}, "--token-file is required"},
		{ReplicaServer{Listen: "127.0.0.1:0", Dir: dir, TokenFile: filepath.Join(dir, "none")}, "reading --token-file"},
		{ReplicaServer{Listen: busy.Addr().String(), Dir: filepath.Join(dir, "r1"), TokenFile: tokenFile}, "--listen: "},
	} {
		err := c.s.Serve(ctx, nil, log)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want invalid %q", c.s, err, c.want)
		}
	}

	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- ReplicaServer{Listen: addr, Dir: filepath.Join(dir, "r2"), TokenFile: tokenFile}.Serve(ctx, nil, log)
	}()
	c, err := Dial(Site{Name: "dr", URL: "http://" + addr, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	spec := replica.Spec{Machine: "m1", Disks: []replica.DiskSpec{{Name: "a", Size: 1 << 20}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Register(ctx, spec)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica server never answered: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("the replica server stopped: %v", err)
		case <-time.After(20 * time.Millisecond): // polling until it listens
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the replica server outlived its context")
	}
}
