package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/discover"
)

// DefaultURL is the server a client reaches when none is given.
const DefaultURL = "http://127.0.0.1:8080"

// ErrSettings is wrapped by the errors of Connect about how the server
// was named or the token given: bad input, not a failure to reach it.
var ErrSettings = errors.New("invalid server settings")

type settingsError string

func (e settingsError) Error() string        { return string(e) }
func (e settingsError) Is(target error) bool { return target == ErrSettings }

// Connect makes the client of the server at server (else LIFEBOAT_SERVER,
// else DefaultURL) with the token in tokenFile (else LIFEBOAT_TOKEN) —
// the --server and --token-file of the commands and the agent.
func Connect(server, tokenFile string, getenv func(string) string) (*Client, error) {
	if server == "" {
		server = getenv("LIFEBOAT_SERVER")
	}
	if server == "" {
		server = DefaultURL
	}
	if u, err := url.Parse(server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, settingsError(fmt.Sprintf("--server %q: want http://HOST:PORT or https://HOST:PORT", server))
	}
	tok := getenv("LIFEBOAT_TOKEN")
	if tokenFile != "" {
		raw, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, settingsError(fmt.Sprintf("reading --token-file: %v", err))
		}
		tok = strings.TrimSpace(string(raw))
	}
	if tok == "" {
		return nil, settingsError("no API token: use --token-file (the server wrote its first one to DATA/admin.token) or LIFEBOAT_TOKEN")
	}
	return &Client{URL: server, Token: tok}, nil
}

// Wait follows job j, asking the server every interval, until it is
// neither queued nor running, and returns it as it ended.
func (c *Client) Wait(ctx context.Context, j catalog.Job, interval time.Duration) (catalog.Job, error) {
	for j.State == catalog.Queued || j.State == catalog.Running {
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(interval):
		}
		if err := c.Do(ctx, "GET", "/v1/jobs/"+url.PathEscape(j.ID), nil, &j); err != nil {
			return j, err
		}
	}
	return j, nil
}

// Queue posts a job request to path and returns the job the server queued.
func (c *Client) Queue(ctx context.Context, path string, body any) (catalog.Job, error) {
	var j catalog.Job
	err := c.Do(ctx, "POST", path, body, &j)
	return j, err
}

// RunJob queues a job (POST path with body) and returns it; with wait it
// first calls queued with the queued job, then follows it every second
// until it ends and returns it as it ended.
func (c *Client) RunJob(ctx context.Context, path string, body any, wait bool, queued func(catalog.Job)) (catalog.Job, error) {
	j, err := c.Queue(ctx, path, body)
	if err != nil || !wait {
		return j, err
	}
	if queued != nil {
		queued(j)
	}
	return c.Wait(ctx, j, time.Second)
}

// JobsPath is GET /v1/jobs filtered by f's machine, agent, state and kind
// (where set) and limit (where positive).
func JobsPath(f catalog.JobFilter) string {
	q := url.Values{}
	for k, v := range map[string]string{"machine": f.Machine, "agent": f.Agent, "state": f.State, "kind": f.Kind} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return "/v1/jobs?" + q.Encode()
}

// JobError is nil for a job that succeeded, otherwise an error saying how
// it ended.
func JobError(j catalog.Job) error {
	if j.State == catalog.Succeeded {
		return nil
	}
	return fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
}

// Discover runs a discover job on an agent (the server's built-in one
// unless body names another) and returns the QEMU machines it found.
func (c *Client) Discover(ctx context.Context, body DiscoverJSON) ([]discover.Machine, error) {
	j, err := c.Queue(ctx, "/v1/discover", body)
	if err != nil {
		return nil, err
	}
	j, err = c.Wait(ctx, j, 200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	if j.State != catalog.Succeeded {
		return nil, fmt.Errorf("discover job %s on agent %s %s: %s", j.ID, j.Agent, j.State, j.Error)
	}
	var res struct {
		Machines []discover.Machine `json:"machines"`
	}
	if err := json.Unmarshal(j.Result, &res); err != nil {
		return nil, fmt.Errorf("discover job %s: result: %w", j.ID, err)
	}
	return res.Machines, nil
}

// VaultName is the name a vault given by URL (a directory or s3://…) is
// registered under: the URL's letters, digits, dots and underscores, other
// runs of characters as one dash, at most its last 63 characters.
func VaultName(ref string) string {
	var b strings.Builder
	for _, c := range strings.TrimPrefix(ref, "s3://") {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' {
			b.WriteRune(c)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-.")
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	return name
}

// VaultRef turns a vault named by a policy — a name the server knows, or a
// directory or s3:// URL — into a name, registering a URL with the server
// under VaultName(ref) on the way.
func (c *Client) VaultRef(ctx context.Context, ref string) (string, error) {
	if ref == "" || !strings.ContainsAny(ref, "/:") {
		return ref, nil
	}
	name := VaultName(ref)
	if err := c.Do(ctx, "PUT", "/v1/vaults/"+url.PathEscape(name), map[string]string{"url": ref}, nil); err != nil {
		return "", err
	}
	return name, nil
}
