package replicate

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"lifeboat/internal/replica"
)

// ErrSite wraps errors talking to a target site.
var ErrSite = errors.New("target site")

// SiteError is an error the replica server answered.
type SiteError struct {
	Status  int
	Code    string // out_of_order, failed_over, not_found, invalid
	Message string
	LastSeq uint64
}

func (e *SiteError) Error() string { return e.Message }

// Bounds on a site's answers, so that a site that accepts connections but
// never answers (a cut link, a hung server) is noticed. Shipping a batch
// is bounded by the stall watchdog instead (Runner.StallTimeout).
var (
	RequestTimeout  = time.Minute      // status, registration, removal, cleanup
	FailoverTimeout = 30 * time.Minute // materialising the disks and starting the machine; commit
	HashesTimeout   = time.Hour        // hashing the latest cut; converting seed images
)

// Client talks to a target site's replica server.
type Client struct {
	site  Site
	token string
	http  *http.Client
	// Timeout bounds status, registration, removal and cleanup requests
	// (RequestTimeout when 0).
	Timeout time.Duration
	// LinkTimeout, when set, is how long a connection to the site may go
	// with its bytes or its keep-alive probes unacknowledged before it is
	// dropped. A cut link then fails a request within about that long
	// even when nothing is left to send: a batch small enough for the
	// socket's buffers is all sent at once, and its reply may take long
	// (the site checks and fsyncs it), so only the link can tell a busy
	// site from one out of reach. Set before the first request.
	LinkTimeout time.Duration
}

// Dial prepares a client for the site (nothing is sent yet).
func Dial(s Site) (*Client, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	token, err := readToken(s.TokenFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.CA != "" {
		pem, err := os.ReadFile(s.CA)
		if err != nil {
			return nil, fmt.Errorf("site %s: reading its CA: %w", s.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: site %s: no certificate in %s", ErrInvalid, s.Name, s.CA)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c := &Client{site: s, token: token, http: &http.Client{Transport: tr}}
	tr.DialContext = c.dial
	return c, nil
}

// dial connects to the site as http.DefaultTransport does, with the
// LinkTimeout's probes and bound when set.
func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if t := c.LinkTimeout; t > 0 {
		// Probes a few times within the timeout (the kernel counts them
		// in whole seconds).
		probe := max(t/4, time.Second)
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 4}
		d.Control = userTimeout(t)
	}
	return d.DialContext(ctx, network, addr)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any, encoding ...string) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = RequestTimeout
	}
	return c.doWithin(ctx, timeout, method, path, body, out, encoding...)
}

// doWithin sends a request and waits at most timeout for it (0: no bound).
func (c *Client) doWithin(ctx context.Context, timeout time.Duration, method, path string, body io.Reader, out any, encoding ...string) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	u := strings.TrimRight(c.site.URL, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	for _, e := range encoding {
		req.Header.Set("Content-Encoding", e)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrSite, c.site.Name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("%w %s: reading the reply: %w", ErrSite, c.site.Name, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error   string `json:"error"`
			Code    string `json:"code"`
			LastSeq uint64 `json:"last_seq"`
		}
		json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		se := &SiteError{Status: resp.StatusCode, Code: e.Code, Message: fmt.Sprintf("%s (%s)", e.Error, resp.Status), LastSeq: e.LastSeq}
		if se.Code == "not_found" {
			// No such machine or point at the site: ErrNotFound, as a
			// site or machine missing on this host is.
			return fmt.Errorf("%w: %w %s: %w", ErrNotFound, ErrSite, c.site.Name, se)
		}
		return fmt.Errorf("%w %s: %w", ErrSite, c.site.Name, se)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%w %s: bad reply: %w", ErrSite, c.site.Name, err)
		}
	}
	return nil
}

func machinePath(name string) string { return "/v1/replicas/" + url.PathEscape(name) }

// Register creates or updates the machine at the site.
func (c *Client) Register(ctx context.Context, spec replica.Spec) (replica.StatusReply, error) {
	var st replica.StatusReply
	body, err := json.Marshal(spec)
	if err != nil {
		return st, err
	}
	timeout := RequestTimeout
	if len(spec.Seed) > 0 {
		timeout = HashesTimeout // the site converts the seed images first
	}
	err = c.doWithin(ctx, timeout, http.MethodPut, machinePath(spec.Machine), bytes.NewReader(body), &st)
	return st, err
}

// Status returns the machine's replica at the site.
func (c *Client) Status(ctx context.Context, machine string) (replica.StatusReply, error) {
	var st replica.StatusReply
	err := c.do(ctx, http.MethodGet, machinePath(machine), nil, &st)
	return st, err
}

// Send ships batch seq, zstd-compressed in body; it returns once the site
// has it durably.
func (c *Client) Send(ctx context.Context, machine string, seq uint64, body io.Reader) error {
	return c.doWithin(ctx, 0, http.MethodPost, fmt.Sprintf("%s/batches/%d", machinePath(machine), seq), body, nil, "zstd")
}

// Failover asks the site to fail the machine over.
func (c *Client) Failover(ctx context.Context, machine string, opts replica.FailoverOptions) (*replica.Failover, error) {
	body, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	var fo replica.Failover
	if err := c.doWithin(ctx, FailoverTimeout, http.MethodPost, machinePath(machine)+"/failover", bytes.NewReader(body), &fo); err != nil {
		return nil, err
	}
	return &fo, nil
}

// GroupStatus asks the site for a replication group's members and points.
func (c *Client) GroupStatus(ctx context.Context, group string) (*replica.GroupStatus, error) {
	var st replica.GroupStatus
	if err := c.do(ctx, http.MethodGet, "/v1/groups/"+url.PathEscape(group), nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// GroupFailover asks the site to fail every member of a group over to the
// same group cut.
func (c *Client) GroupFailover(ctx context.Context, group string, opts replica.FailoverOptions) (*replica.GroupFailover, error) {
	body, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	var gf replica.GroupFailover
	if err := c.doWithin(ctx, FailoverTimeout, http.MethodPost, "/v1/groups/"+url.PathEscape(group)+"/failover", bytes.NewReader(body), &gf); err != nil {
		return nil, err
	}
	return &gf, nil
}

// GroupCleanupTest asks the site to remove the test failovers of a
// group's members.
func (c *Client) GroupCleanupTest(ctx context.Context, group string) (*replica.GroupFailover, error) {
	var gf replica.GroupFailover
	if err := c.do(ctx, http.MethodPost, "/v1/groups/"+url.PathEscape(group)+"/failover/cleanup", nil, &gf); err != nil {
		return nil, err
	}
	return &gf, nil
}

// CleanupTest asks the site to remove the machine's test failover.
func (c *Client) CleanupTest(ctx context.Context, machine string) (*replica.Failover, error) {
	var fo replica.Failover
	if err := c.do(ctx, http.MethodPost, machinePath(machine)+"/failover/cleanup", nil, &fo); err != nil {
		return nil, err
	}
	return &fo, nil
}

// Hashes asks the site for the block hashes of the machine's latest cut.
func (c *Client) Hashes(ctx context.Context, machine string) (*replica.Hashes, error) {
	var h replica.Hashes
	if err := c.doWithin(ctx, HashesTimeout, http.MethodGet, machinePath(machine)+"/hashes", nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Commit asks the site to make the machine's failover final.
func (c *Client) Commit(ctx context.Context, machine string) (*replica.Failover, error) {
	var fo replica.Failover
	if err := c.doWithin(ctx, FailoverTimeout, http.MethodPost, machinePath(machine)+"/failover/commit", nil, &fo); err != nil {
		return nil, err
	}
	return &fo, nil
}

// Site is the name of the client's site.
func (c *Client) Site() string { return c.site.Name }

// Hold asks the site to keep a point of the machine readable on its host
// (replicate copy) until Release.
func (c *Client) Hold(ctx context.Context, machine string, opts replica.HoldOptions) (*replica.Hold, error) {
	body, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	var h replica.Hold
	if err := c.doWithin(ctx, FailoverTimeout, http.MethodPost, machinePath(machine)+"/holds", bytes.NewReader(body), &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Release ends a hold.
func (c *Client) Release(ctx context.Context, machine, id string) error {
	return c.do(ctx, http.MethodDelete, machinePath(machine)+"/holds/"+url.PathEscape(id), nil, nil)
}

// Remove deletes the machine's replica at the site.
func (c *Client) Remove(ctx context.Context, machine string) error {
	return c.do(ctx, http.MethodDelete, machinePath(machine), nil, nil)
}

// siteCode is the code of a site's refusal ("" for other errors).
func siteCode(err error) string {
	var se *SiteError
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}
