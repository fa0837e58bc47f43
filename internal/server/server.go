// Package server wires the control plane together: the catalog, the API
// on an HTTP listener, and the scheduler's clockwork. It holds no
// protection logic of its own (DESIGN.md, Layers): the API decides what a
// request means, the scheduler package what is due, the job specs what a
// backup is.
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"lifeboat/internal/agent"
	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
	"lifeboat/internal/dashboard"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/listen"
	"lifeboat/internal/location"
	"lifeboat/internal/policy"
	"lifeboat/internal/replicate"
	"lifeboat/internal/secrets"
	"lifeboat/internal/vault"
)

// Config is how a server runs. Zero values are the zero-configuration
// defaults.
type Config struct {
	// DataDir holds the catalog (unless DB names PostgreSQL) and the
	// first admin token. Default /var/lib/lifeboat.
	DataDir string
	// DB is a PostgreSQL URL, or a SQLite path; default DataDir/catalog.db.
	DB string
	// Listen is the API's address; default 127.0.0.1:8080.
	Listen string
	// InsecureListen allows plain HTTP on an address that is not loopback.
	InsecureListen bool
	// TLSCert and TLSKey serve HTTPS.
	TLSCert, TLSKey string
	// Webhooks receive alerts.
	Webhooks []string
	// Tick is how often the scheduler runs; default 10 s.
	Tick time.Duration
	// DrillEvery, if not zero, drills every protected machine's latest
	// point that often (Scheduler.DrillEvery).
	DrillEvery time.Duration
	Clock      clock.Clock
	Log        *slog.Logger
	// Out receives what the operator must read once: the first admin
	// token and the address served.
	Out io.Writer
	// Ready, when set, is called with the address actually served
	// (useful with port 0).
	Ready func(addr string)
	// Runner, when set, runs jobs in a built-in agent for this host,
	// named Host (default: the host name), with its token kept in
	// DATA/agent.token.
	Runner agent.Runner
	Host   string
	// Replicate, when set with Runner, makes the built-in agent also run
	// the continuous replication of this host's machines
	// (replicate.Supervise with this template), report their status and
	// run those enabled through the server for it, as lifeboat agent
	// --replicate does.
	Replicate *replicate.Runner
	// VaultOptions are used to create the default vault.
	VaultOptions vault.Options
	// NoDefaultVault: a catalog without vaults stays without one.
	NoDefaultVault bool
	// VaultURL names the vault a catalog without vaults takes as its
	// default (lifeboat server --vault URL) instead of making DATA/vault.
	// It must be a vault already (lifeboat vault init) that Passphrase
	// unlocks. A catalog that has a default vault elsewhere refuses it.
	VaultURL string
	// Passphrase returns the passphrase of the vault at a URL (the
	// default vault's is also found in DATA/vault.passphrase); Getenv
	// supplies S3 settings. With Passphrase nil the server opens no vault
	// itself: no catalog snapshots, no recovery.
	Passphrase func(url string) ([]byte, error)
	Getenv     func(string) string
	// RecoverFrom rebuilds an empty catalog from the newest catalog
	// snapshot in the vault at this URL (and the points in the vaults it
	// names) before serving; that vault becomes the default vault.
	RecoverFrom string
	// OpenVault opens vaults for snapshots and recovery; nil: from
	// Passphrase and Getenv.
	OpenVault VaultOpener
}

// DefaultVault is the name of the vault a first start makes in DATA/vault
// (unless the catalog already knows a vault); its passphrase is kept in
// DATA/vault.passphrase.
const (
	DefaultVault          = api.DefaultVault
	DefaultVaultDir       = "vault"
	DefaultPassphraseFile = "vault.passphrase"
)

// DefaultVaultPassphrase returns the passphrase of the default vault of
// the server with data directory dataDir, if url is that vault.
func DefaultVaultPassphrase(dataDir, url string) ([]byte, bool) {
	if filepath.Clean(url) != filepath.Join(dataDir, DefaultVaultDir) {
		return nil, false
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, DefaultPassphraseFile))
	if err != nil {
		return nil, false
	}
	return []byte(strings.TrimSpace(string(raw))), true
}

// KeptPassphrase looks a vault's passphrase up as the jobs of the server
// with data directory dataDir do: the one it keeps for its default vault
// (DefaultVaultPassphrase), else other's. With dataDir "" it is other.
func KeptPassphrase(dataDir string, other func(url string) ([]byte, error)) func(url string) ([]byte, error) {
	return func(url string) ([]byte, error) {
		if dataDir != "" {
			if pw, ok := DefaultVaultPassphrase(dataDir, url); ok {
				return pw, nil
			}
		}
		return other(url)
	}
}

// AgentTokenFile is where the built-in agent's token is kept.
const AgentTokenFile = "agent.token"

// ErrConfig is wrapped by errors in the server's configuration (the
// command maps it to a usage error).
var ErrConfig = errors.New("invalid server configuration")

// AdminTokenFile is where the first start writes the admin token.
const AdminTokenFile = "admin.token"

func (c *Config) defaults() {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/lifeboat"
	}
	if c.DB == "" {
		c.DB = filepath.Join(c.DataDir, "catalog.db")
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.Tick <= 0 {
		c.Tick = 10 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Getenv == nil {
		c.Getenv = func(string) string { return "" }
	}
}

// SecretsFile is where the server keeps vault credentials (mode 0600).
const SecretsFile = "secrets.json"

// vaultOpener opens vaults for the server itself (catalog snapshots,
// recovery): with the credentials kept for the vault of that URL, else
// the default vault's passphrase file, else cfg.Passphrase.
func vaultOpener(cfg Config, cat *catalog.Catalog, sec *secrets.File) VaultOpener {
	return func(ctx context.Context, url string) (*vault.Vault, error) {
		var cred secrets.Credential
		vs, err := cat.Vaults(ctx)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if v.URL == url {
				if c, ok, err := sec.Get(v.Name); err != nil {
					return nil, err
				} else if ok {
					cred = c
				}
			}
		}
		pw := []byte(cred.Password)
		if len(pw) == 0 {
			var ok bool
			if pw, ok = DefaultVaultPassphrase(cfg.DataDir, url); !ok {
				if cfg.Passphrase == nil {
					return nil, fmt.Errorf("no passphrase for vault %s", url)
				}
				if pw, err = cfg.Passphrase(url); err != nil {
					return nil, err
				}
			}
		}
		opts := cfg.VaultOptions
		opts.Clock = cfg.Clock
		return location.Open(ctx, url, cred.Getenv(cfg.Getenv), pw, opts)
	}
}

// checkListen refuses plain HTTP beyond loopback unless asked for: tokens
// would cross the network in clear.
func checkListen(addr string, tlsOn, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: %v", ErrConfig, addr, err)
	}
	if tlsOn || insecure {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: --listen %s is not a loopback address: serve TLS (--tls-cert, --tls-key) or say --insecure-listen; tokens would cross the network in clear", ErrConfig, addr)
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return fmt.Errorf("%w: give both --tls-cert and --tls-key, or neither", ErrConfig)
	}
	if err := checkListen(cfg.Listen, cfg.TLSCert != "", cfg.InsecureListen); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating the data directory: %w", err)
	}
	cat, err := catalog.Open(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer cat.Close()
	sec := secrets.Open(filepath.Join(cfg.DataDir, SecretsFile))
	if cfg.OpenVault == nil && cfg.Passphrase != nil {
		cfg.OpenVault = vaultOpener(cfg, cat, sec)
	}
	if cfg.RecoverFrom != "" {
		rep, err := recoverCatalog(ctx, cat, cfg, cfg.RecoverFrom)
		if err != nil {
			return err
		}
		if cfg.Passphrase != nil {
			if pw, err := cfg.Passphrase(cfg.RecoverFrom); err == nil {
				if err := keepPassphrase(cfg.DataDir, cfg.RecoverFrom, pw); err != nil {
					return err
				}
			}
		}
		fmt.Fprintf(cfg.Out, "lifeboat server: recovered from %s: the catalog saved at %s by %s — %d machines, %d policies, %d tiers, %d tokens, %d jobs of history, %d alerts; %d points found in the vaults\n",
			cfg.RecoverFrom, rep.Snapshot.Format(time.RFC3339), rep.Host, rep.Machines, rep.Policies, rep.Tiers, rep.Tokens, rep.Jobs, rep.Alerts, rep.Points)
		cfg.Log.Info("catalog recovered from the vault", "vault", cfg.RecoverFrom, "snapshot", rep.Snapshot, "machines", rep.Machines, "points", rep.Points)
		// Whoever recovers gets an admin token of their own: the old ones
		// may have been lost with the server.
		if err := newAdmin(ctx, cat, cfg, "admin-recovered", "recovery"); err != nil {
			return err
		}
	}
	if err := firstAdmin(ctx, cat, cfg); err != nil {
		return err
	}
	if !cfg.NoDefaultVault {
		if err := defaultVault(ctx, cat, cfg); err != nil {
			return err
		}
	}

	ln, scheme, err := listen.TCP(cfg.Listen, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return err
	}
	var agentToken, agentName string
	if cfg.Runner != nil {
		if agentToken, agentName, err = builtinAgentToken(ctx, cat, cfg); err != nil {
			ln.Close()
			return err
		}
	}
	sched := &Scheduler{Catalog: cat, Log: cfg.Log, Webhooks: cfg.Webhooks, Started: cfg.Clock.Now(), Agent: agentName, DrillEvery: cfg.DrillEvery}
	defer sched.Close()
	apiSrv := &api.Server{Catalog: cat, Clock: cfg.Clock, Log: cfg.Log, DefaultAgent: agentName, Secrets: sec,
		Alerted: sched.Alerted}
	// The dashboard shares the listener and speaks only the API.
	httpSrv := &http.Server{Handler: dashboard.Mount(apiSrv.Handler()), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()
	addr := ln.Addr().String()
	fmt.Fprintf(cfg.Out, "lifeboat server: API and dashboard on %s://%s/ (catalog: %s)\n", scheme, addr, cat.Engine())
	cfg.Log.Info("lifeboat server started", "addr", addr, "catalog", cat.Engine(), "data", cfg.DataDir)
	if cfg.Ready != nil {
		cfg.Ready(addr)
	}

	if cfg.Runner != nil {
		client := &api.Client{URL: scheme + "://" + addr, Token: agentToken}
		if scheme == "https" {
			// The built-in agent talks to this very server over loopback.
			client.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		}
		_, builtinInfo := agent.HostInfo(agentName, true)
		ag := &agent.Agent{Client: client, Runner: cfg.Runner, Log: cfg.Log.With("agent", agentName),
			Info:   builtinInfo,
			Offers: func(ctx context.Context) any { return libvirt.Offers(ctx, "") }, Replicate: cfg.Replicate}
		go ag.Run(ctx)
		cfg.Log.Info("built-in agent started", "name", agentName, "replicates", cfg.Replicate != nil)
	}

	if cfg.OpenVault != nil {
		saver := &catalogSaver{cat: cat, open: cfg.OpenVault, clock: cfg.Clock, log: cfg.Log, builtin: agentName}
		go saver.run(ctx, cfg.Tick)
	}

	ticker := time.NewTicker(cfg.Tick)
	defer ticker.Stop()
	tick := func() {
		if _, err := sched.Tick(ctx, cfg.Clock.Now()); err != nil && ctx.Err() == nil {
			cfg.Log.Error("scheduler tick failed", "err", err)
		}
	}
	tick() // a slot missed while the server was down runs now, once
	for {
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			httpSrv.Shutdown(shut)
			return nil
		case err := <-served:
			return fmt.Errorf("API server stopped: %w", err)
		case <-ticker.C:
			tick()
		}
	}
}

// firstAdmin makes the admin token on a catalog that has none, writes it
// to DataDir/admin.token (0600) and shows it once.
func firstAdmin(ctx context.Context, cat *catalog.Catalog, cfg Config) error {
	tokens, err := cat.Tokens(ctx)
	if err != nil {
		return err
	}
	for _, t := range tokens {
		if t.Role == catalog.RoleAdmin && t.Revoked.IsZero() {
			return nil
		}
	}
	return newAdmin(ctx, cat, cfg, "admin", "first start")
}

// newAdmin makes an admin token named base (or base-N), writes it to
// DataDir/admin.token (0600) and shows it once.
func newAdmin(ctx context.Context, cat *catalog.Catalog, cfg Config, base, why string) error {
	secret, err := api.NewSecret()
	if err != nil {
		return err
	}
	path := filepath.Join(cfg.DataDir, AdminTokenFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the first admin token: %w (remove it if it is left from an older catalog)", err)
	}
	if _, err := fmt.Fprintln(f, secret); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	name := base
	for taken := 1; ; taken++ {
		_, err = cat.AddToken(ctx, name, catalog.RoleAdmin, api.HashToken(secret), cfg.Clock.Now())
		if !errors.Is(err, catalog.ErrExists) {
			break
		}
		name = fmt.Sprintf("%s-%d", base, taken)
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	fmt.Fprintf(cfg.Out, "lifeboat server: %s: admin token %q written to %s (shown once):\n  %s\n", why, name, path, secret)
	return nil
}

// builtinAgentToken returns the built-in agent's token and name: the one
// kept in DATA/agent.token if the catalog still knows it, else a new one
// for this host.
func builtinAgentToken(ctx context.Context, cat *catalog.Catalog, cfg Config) (secret, name string, err error) {
	path := filepath.Join(cfg.DataDir, AgentTokenFile)
	if raw, err := os.ReadFile(path); err == nil {
		secret = strings.TrimSpace(string(raw))
		if t, err := cat.TokenByHash(ctx, api.HashToken(secret)); err == nil && t.Role == catalog.RoleAgent {
			return secret, t.Name, nil
		}
		os.Remove(path) // revoked, or from another catalog
	}
	base := cfg.Host
	if base == "" {
		base, _ = os.Hostname()
	}
	base = hostName(base)
	if secret, err = api.NewSecret(); err != nil {
		return "", "", err
	}
	name = base
	for n := 2; ; n++ {
		_, err = cat.AddToken(ctx, name, catalog.RoleAgent, api.HashToken(secret), cfg.Clock.Now())
		if !errors.Is(err, catalog.ErrExists) {
			break
		}
		name = fmt.Sprintf("%s-%d", base, n)
	}
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("writing %s: %w", path, err)
	}
	return secret, name, nil
}

// hostName makes a host name a valid agent name.
func hostName(h string) string {
	h, _, _ = strings.Cut(h, ".")
	var b strings.Builder
	for _, r := range h {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (b.Len() > 0 && (r == '-' || r == '_')) {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "local"
	}
	return b.String()
}

// defaultVault gives a catalog that knows no vault one: DATA/vault, with
// a generated passphrase kept in DATA/vault.passphrase (0600) and shown
// once, since losing the server must not mean losing the key to the
// backups.
func defaultVault(ctx context.Context, cat *catalog.Catalog, cfg Config) error {
	vs, err := cat.Vaults(ctx)
	if err != nil {
		return err
	}
	if cfg.VaultURL != "" {
		return namedDefaultVault(ctx, cat, cfg, vs)
	}
	if len(vs) > 0 {
		return nil
	}
	dir := filepath.Join(cfg.DataDir, DefaultVaultDir)
	passFile := filepath.Join(cfg.DataDir, DefaultPassphraseFile)
	store, err := location.Store(ctx, dir, true, os.Getenv)
	if err != nil {
		return fmt.Errorf("default vault: %w", err)
	}
	if _, err := vault.ReadConfig(ctx, store); err != nil {
		// No vault there yet: make one with a new passphrase.
		var key [32]byte
		if _, err := rand.Read(key[:]); err != nil {
			return err
		}
		pass := base64.RawURLEncoding.EncodeToString(key[:])
		f, err := os.OpenFile(passFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("default vault: writing its passphrase: %w (remove %s if it is left from an older data directory)", err, passFile)
		}
		if _, err := fmt.Fprintln(f, pass); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		opts := cfg.VaultOptions
		opts.Clock = cfg.Clock
		opts.SoftDelete = cmp.Or(opts.SoftDelete, policy.DefaultSoftDelete)
		if _, err := vault.Init(ctx, store, []byte(pass), opts); err != nil {
			os.Remove(passFile)
			return fmt.Errorf("default vault: %w", err)
		}
		fmt.Fprintf(cfg.Out, "lifeboat server: first start: vault %q created in %s; its passphrase is in %s (shown once):\n  %s\n"+
			"  Keep a copy somewhere other than this host: without it the backups cannot be read.\n"+
			"  lifeboat vault key export --vault %s --password-file %s --to FILE writes its recovery sheet.\n", DefaultVault, dir, passFile, pass, dir, passFile)
	}
	return cat.PutVault(ctx, catalog.Vault{Name: DefaultVault, URL: dir}, cfg.Clock.Now())
}

// namedDefaultVault makes the vault at cfg.VaultURL the default vault of
// a catalog that has none, after checking that it is a vault and that
// its passphrase opens it, so that the first backup does not find out.
func namedDefaultVault(ctx context.Context, cat *catalog.Catalog, cfg Config, vs []catalog.Vault) error {
	for _, v := range vs {
		if v.Name == DefaultVault {
			if v.URL == cfg.VaultURL {
				return nil
			}
			return fmt.Errorf("--vault %s: this server's default vault is already %s (change it with lifeboat vault add %s --url URL --server …, or add this one under another name)",
				cfg.VaultURL, v.URL, DefaultVault)
		}
	}
	if cfg.OpenVault == nil {
		return fmt.Errorf("--vault %s: no passphrase to open it: start lifeboat with --password-file, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD", cfg.VaultURL)
	}
	if _, err := cfg.OpenVault(ctx, cfg.VaultURL); err != nil {
		return fmt.Errorf("--vault %s: %w (make one first with lifeboat vault init --vault URL)", cfg.VaultURL, err)
	}
	return cat.PutVault(ctx, catalog.Vault{Name: DefaultVault, URL: cfg.VaultURL}, cfg.Clock.Now())
}
