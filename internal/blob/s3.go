package blob

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// S3Config locates an S3 bucket and the credentials to use it.
type S3Config struct {
	// Endpoint is the server's host[:port], e.g. "s3.eu-west-1.amazonaws.com"
	// or "127.0.0.1:7070". It may also be a URL with an http:// or https://
	// scheme, which then decides Insecure. Empty means Amazon S3.
	Endpoint string
	// Bucket must exist; NewS3 checks that it does.
	Bucket string
	// Prefix is prepended, with a slash, to every object name, so that one
	// bucket can hold several vaults. Empty means the bucket's root; leading
	// and trailing slashes are ignored.
	Prefix string
	// AccessKey and SecretKey are the credentials (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY).
	AccessKey string
	SecretKey string
	// SessionToken goes with temporary credentials (AWS_SESSION_TOKEN),
	// such as a read-only role's; empty for long-lived keys.
	SessionToken string
	// Region is the bucket's region; empty means us-east-1.
	Region string
	// Insecure selects plain HTTP instead of HTTPS. NewS3 allows it only
	// for a loopback endpoint, or when LIFEBOAT_S3_ALLOW_HTTP=1.
	Insecure bool
	// StallTimeout abandons a request whose connection moves no byte for
	// this long, or whose answer does not start within it, and bounds
	// connecting; 0 means DefaultStallTimeout.
	StallTimeout time.Duration
	// RetryBudget bounds the time OpenS3's retries spend on one call
	// (RetryPolicy.Budget); 0 means DefaultRetry's.
	RetryBudget time.Duration
	// CreateOnly makes every Put conditional (If-None-Match: *), so that it
	// never replaces an object: a name that exists with the same bytes is
	// accepted as no change, with other bytes refused (ErrExists). A
	// bucket policy that denies s3:PutObject without the condition
	// (AWS: s3:if-none-match) then gives credentials that cannot
	// overwrite (docs/immutable.md).
	CreateOnly bool
}

// Environment variables read by S3ConfigFromEnv and NewS3.
const (
	envEndpoint  = "LIFEBOAT_S3_ENDPOINT"
	envAllowHTTP = "LIFEBOAT_S3_ALLOW_HTTP"
	envAccessKey = "AWS_ACCESS_KEY_ID"
	envSecretKey = "AWS_SECRET_ACCESS_KEY"
	envToken     = "AWS_SESSION_TOKEN"
	envRegion    = "AWS_REGION"
	envStall     = "LIFEBOAT_S3_STALL_TIMEOUT"
	envBudget    = "LIFEBOAT_S3_RETRY_BUDGET"
	envCreate    = "LIFEBOAT_S3_CREATE_ONLY"
)

const (
	defaultEndpoint = "s3.amazonaws.com"
	defaultRegion   = "us-east-1"
	// singlePutMax is the largest object stored with one PUT request;
	// larger ones are uploaded in parts of multipartSize. A single PUT is
	// atomic and retried as a whole by the Retry wrapper.
	singlePutMax  = 512 << 20
	multipartSize = 64 << 20
)

// S3 is a Store on an S3 bucket, under an optional key prefix.
//
// Each method makes one attempt: transport errors and 5xx responses are
// returned as transient errors for the Retry wrapper to handle, and
// configuration errors (missing bucket, bad credentials) are wrapped with
// ErrPermanent and name the bucket and what to check.
type S3 struct {
	client     *minio.Client
	bucket     string
	prefix     string // "" or ending in "/"
	endpoint   string // as given, for messages
	createOnly bool
}

// ParseS3URL splits "s3://bucket/prefix" into its bucket and its prefix,
// which may be empty and is returned without the one trailing slash allowed.
func ParseS3URL(rawURL string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(rawURL, "s3://")
	if !ok {
		return "", "", fmt.Errorf("S3 URL %q does not start with s3://", rawURL)
	}
	if strings.ContainsAny(rest, "?#") {
		return "", "", fmt.Errorf("S3 URL %q: query strings and fragments are not supported", rawURL)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("S3 URL %q has no bucket name", rawURL)
	}
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return "", "", fmt.Errorf("S3 URL %q: invalid bucket name %q: %v", rawURL, bucket, err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if err := checkKeyPrefix(prefix); err != nil {
		return "", "", fmt.Errorf("S3 URL %q: %w", rawURL, err)
	}
	return bucket, prefix, nil
}

// checkKeyPrefix checks a store's key prefix: slash-separated components
// that are not empty, "." or "..", of characters that are safe in any S3
// key. Unlike object names it allows upper case.
func checkKeyPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	for _, part := range strings.Split(prefix, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("invalid key prefix %q", prefix)
		}
		for _, r := range part {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r)
			if !ok {
				return fmt.Errorf("invalid key prefix %q: only letters, digits, '.', '_' and '-' are allowed", prefix)
			}
		}
	}
	return nil
}

// S3ConfigFromEnv returns the configuration for the vault at an
// "s3://bucket/prefix" URL, taking the rest from the environment:
//
//   - LIFEBOAT_S3_ENDPOINT: "https://host[:port]", "http://host[:port]" or
//     a bare "host[:port]", which means HTTPS. Unset means Amazon S3.
//   - AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: required; with
//     AWS_SESSION_TOKEN for temporary credentials.
//   - AWS_REGION: defaults to us-east-1.
//   - LIFEBOAT_S3_STALL_TIMEOUT: S3Config.StallTimeout, e.g. "30s".
//   - LIFEBOAT_S3_RETRY_BUDGET: S3Config.RetryBudget, e.g. "5m".
//   - LIFEBOAT_S3_CREATE_ONLY: "1" sets S3Config.CreateOnly.
//
// Whether plain HTTP is allowed is checked by NewS3.
func S3ConfigFromEnv(rawURL string) (S3Config, error) {
	return S3ConfigFrom(rawURL, os.Getenv)
}

// S3ConfigFrom is S3ConfigFromEnv with the environment read through getenv.
func S3ConfigFrom(rawURL string, getenv func(string) string) (S3Config, error) {
	bucket, prefix, err := ParseS3URL(rawURL)
	if err != nil {
		return S3Config{}, err
	}
	cfg := S3Config{
		Bucket:       bucket,
		Prefix:       prefix,
		AccessKey:    getenv(envAccessKey),
		SecretKey:    getenv(envSecretKey),
		SessionToken: getenv(envToken),
		Region:       getenv(envRegion),
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return S3Config{}, fmt.Errorf("%s: set %s and %s to the bucket's credentials", rawURL, envAccessKey, envSecretKey)
	}
	if st := getenv(envStall); st != "" {
		d, err := time.ParseDuration(st)
		if err != nil || d <= 0 {
			return S3Config{}, fmt.Errorf("%s=%q: want a positive duration such as 30s or 2m", envStall, st)
		}
		cfg.StallTimeout = d
	}
	switch c := getenv(envCreate); c {
	case "", "0":
	case "1":
		cfg.CreateOnly = true
	default:
		return S3Config{}, fmt.Errorf("%s=%q: want 1 or 0", envCreate, c)
	}
	if b := getenv(envBudget); b != "" {
		d, err := time.ParseDuration(b)
		if err != nil || d <= 0 {
			return S3Config{}, fmt.Errorf("%s=%q: want a positive duration such as 2m or 10m", envBudget, b)
		}
		cfg.RetryBudget = d
	}
	if ep := getenv(envEndpoint); ep != "" {
		host, insecure, err := parseEndpoint(ep)
		if err != nil {
			return S3Config{}, fmt.Errorf("%s: %w", envEndpoint, err)
		}
		cfg.Endpoint, cfg.Insecure = host, insecure
	}
	return cfg, nil
}

// parseEndpoint accepts "http://host[:port]", "https://host[:port]" or a bare
// "host[:port]" (HTTPS), and returns host[:port] and whether it is plain HTTP.
func parseEndpoint(endpoint string) (host string, insecure bool, err error) {
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("invalid S3 endpoint %q: %w", endpoint, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("invalid S3 endpoint %q: the scheme must be http or https", endpoint)
	case u.Host == "" || u.Hostname() == "":
		return "", false, fmt.Errorf("invalid S3 endpoint %q: no host", endpoint)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "":
		return "", false, fmt.Errorf("invalid S3 endpoint %q: want scheme://host[:port] only", endpoint)
	}
	return u.Host, u.Scheme == "http", nil
}

// checkPlainHTTP refuses plain HTTP to anything but a loopback address
// ("localhost" or an IP address in 127.0.0.0/8 or ::1), unless
// LIFEBOAT_S3_ALLOW_HTTP=1: credentials are signed, not encrypted, and the
// data would travel in the clear.
func checkPlainHTTP(hostport string) error {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if IsLoopback(host) {
		return nil
	}
	if os.Getenv(envAllowHTTP) == "1" {
		return nil
	}
	return fmt.Errorf("refusing plain HTTP to %s: use https://, or set %s=1 to allow unencrypted traffic to a non-loopback host: %w",
		hostport, envAllowHTTP, ErrPermanent)
}

// IsLoopback reports whether host (a name or an IP address, bracketed or
// not) is "localhost" or a loopback address.
func IsLoopback(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewS3 connects to the bucket in cfg and checks that it exists and that the
// credentials can reach it. A missing bucket or refused credentials are
// wrapped with ErrPermanent.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("S3 store: no bucket given: %w", ErrPermanent)
	}
	if err := s3utils.CheckValidBucketName(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("S3 store: invalid bucket name %q: %v: %w", cfg.Bucket, err, ErrPermanent)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if err := checkKeyPrefix(prefix); err != nil {
		return nil, fmt.Errorf("S3 store: %w: %w", err, ErrPermanent)
	}
	if prefix != "" {
		prefix += "/"
	}

	endpoint, insecure := cfg.Endpoint, cfg.Insecure
	if endpoint == "" {
		endpoint = defaultEndpoint
	} else if strings.Contains(endpoint, "://") {
		host, plain, err := parseEndpoint(endpoint)
		if err != nil {
			return nil, fmt.Errorf("S3 store: %w: %w", err, ErrPermanent)
		}
		if cfg.Insecure && !plain {
			return nil, fmt.Errorf("S3 store: endpoint %s is HTTPS but Insecure is set: %w", endpoint, ErrPermanent)
		}
		endpoint, insecure = host, plain
	}
	if insecure {
		if err := checkPlainHTTP(endpoint); err != nil {
			return nil, err
		}
	}
	region := cfg.Region
	if region == "" {
		region = defaultRegion
	}

	transport, err := minio.DefaultTransport(!insecure)
	if err != nil {
		return nil, fmt.Errorf("S3 store: %w", err)
	}
	// A connection to a host that vanished (a cut link drops packets
	// rather than refusing them) would otherwise hang a request for as long
	// as TCP keeps retransmitting: fail it, transiently, once no byte moves.
	stall := cfg.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	transport.DialContext = stallDialer(stall)
	// A server that takes the connection and then stalls before it answers
	// is the same fault: no byte moves.
	transport.ResponseHeaderTimeout = stall
	opts := &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:    !insecure,
		Region:    region,
		Transport: transport,
		// One attempt per call: retrying is the Retry wrapper's job, with
		// its own policy and the caller's context.
		MaxRetries: 1,
	}
	u := url.URL{Scheme: "https", Host: endpoint}
	if !s3utils.IsAmazonEndpoint(u) {
		// Custom endpoints rarely have wildcard DNS for virtual hosts.
		opts.BucketLookup = minio.BucketLookupPath
	}
	client, err := minio.New(endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("S3 store: endpoint %q: %w: %w", endpoint, err, ErrPermanent)
	}
	s := &S3{client: client, bucket: cfg.Bucket, prefix: prefix, endpoint: endpoint, createOnly: cfg.CreateOnly}

	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenS3 is NewS3 behind the Retry wrapper, with DefaultRetry's policy and
// cfg's budget: the store lifeboat's commands use.
func OpenS3(ctx context.Context, cfg S3Config) (Store, error) {
	s, err := NewS3(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p := DefaultRetry
	if cfg.RetryBudget > 0 {
		p.Budget = cfg.RetryBudget
	}
	return NewRetryPolicy(s, p), nil
}

// check lists one key to find out whether the bucket exists and the
// credentials may list it. A HEAD bucket request would not do: its error
// responses have no body, so minio-go reports any 404 as NoSuchBucket, and
// versitygw answers an unknown access key with a 404.
func (s *S3) check(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	noOwner := false
	objects := s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{
		Prefix:     s.prefix,
		Recursive:  true,
		MaxKeys:    1,
		FetchOwner: &noOwner,
	})
	for obj := range objects {
		if obj.Err != nil {
			return s.wrap(ctx, "checking bucket", "", obj.Err)
		}
		break
	}
	// minio-go's iterator ends silently when the context is cancelled.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: checking bucket: %w", s, err)
	}
	return nil
}

// String returns "s3://bucket/prefix".
func (s *S3) String() string {
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *S3) key(name string) string { return s.prefix + name }

// wrap turns a minio-go error into one of ours: ErrNotExist for a missing
// object, ErrPermanent for errors that retrying cannot fix, the context's
// error if the context ended, and otherwise the error itself, with the
// store, the operation and the name.
func (s *S3) wrap(ctx context.Context, op, name string, err error) error {
	what := s.String() + ": " + op
	if name != "" {
		what += " " + name
	}
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%s: %w (%w)", what, ctxErr, err)
	}
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch resp.Code {
	case "NoSuchKey":
		return fmt.Errorf("%s: %w", what, ErrNotExist)
	case "NoSuchBucket":
		return fmt.Errorf("%s: bucket %q does not exist at %s: check the bucket name and %s: %w: %w",
			what, s.bucket, s.endpoint, envEndpoint, ErrPermanent, err)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
		"XAdminUserNotFound": // versitygw's InvalidAccessKeyId
		return fmt.Errorf("%s: access to bucket %q refused (%s): check %s, %s and the bucket's policy: %w: %w",
			what, s.bucket, resp.Code, envAccessKey, envSecretKey, ErrPermanent, err)
	case "AuthorizationHeaderMalformed", "InvalidRegion":
		return fmt.Errorf("%s: bucket %q is in another region (%s): check %s: %w: %w",
			what, s.bucket, resp.Code, envRegion, ErrPermanent, err)
	case "InvalidRange":
		return fmt.Errorf("%s: range past the end of the object: %w: %w", what, ErrOutOfRange, err)
	case "InvalidArgument", "InvalidBucketName", "InvalidObjectName", "KeyTooLongError", "EntityTooLarge", "MethodNotAllowed",
		// A file system behind the gateway (versitygw's posix backend)
		// cannot hold both "a" and "a/b".
		"ObjectParentIsFile", "ExistingObjectIsDirectory":
		return fmt.Errorf("%s: %w: %w", what, ErrPermanent, err)
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		// A HEAD response has no body, so no code: minio-go calls a 404
		// NoSuchKey only when it knows the object's name.
		if name != "" {
			return fmt.Errorf("%s: %w", what, ErrNotExist)
		}
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%s: access to bucket %q refused: check %s, %s and the bucket's policy: %w: %w",
			what, s.bucket, envAccessKey, envSecretKey, ErrPermanent, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Put stores data with a single PUT, which S3 applies atomically, with a
// checksum of the body (CRC-32C) so that the server rejects a corrupted one.
// Objects larger than 512 MiB go up in 64 MiB parts, atomic on completion.
func (s *S3) Put(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, name, data, minio.PutObjectOptions{})
}

// put is Put with options (an object lock retention).
func (s *S3) put(ctx context.Context, name string, data []byte, opts minio.PutObjectOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkSize(s, name, int64(len(data))); err != nil {
		return err
	}
	opts.ContentType = "application/octet-stream"
	if s.createOnly {
		opts.SetMatchETagExcept("*")
	}
	var err error
	if len(data) <= singlePutMax {
		// The server checks the body it received against a checksum sent
		// in a header, and the request signs the headers only
		// (UNSIGNED-PAYLOAD): a signed SHA-256 of the payload would check
		// the same body a second time. The checksum is CRC-32C
		// (x-amz-checksum-crc32c, hardware-accelerated: ~0.02 s per GiB
		// against MD5's ~0.6 s, the largest cost of an S3 backup after
		// compression; bench/RESULTS.md, "S3 uploads"), except for a
		// PUT that sets a retention, which keeps Content-MD5 (what object
		// lock asked for before servers took other checksums). What is
		// stored is authenticated by lifeboat anyway (sealed blobs,
		// objects named by their hash): the checksum guards the transfer.
		// DisableContentSha256 keeps minio-go from switching to
		// aws-chunked streaming signatures over plain HTTP.
		md5sum := ""
		if opts.Mode != "" || !opts.RetainUntilDate.IsZero() {
			md := md5.Sum(data)
			md5sum = base64.StdEncoding.EncodeToString(md[:])
		} else {
			opts.UserMetadata = map[string]string{headerCRC32C: crc32cBase64(data)}
		}
		opts.DisableContentSha256 = true
		_, err = minio.Core{Client: s.client}.PutObject(ctx, s.bucket, s.key(name), bytes.NewReader(data), int64(len(data)),
			md5sum, "", opts)
	} else {
		opts.PartSize = multipartSize
		_, err = s.client.PutObject(ctx, s.bucket, s.key(name), bytes.NewReader(data), int64(len(data)), opts)
	}
	var resp minio.ErrorResponse
	if s.createOnly && errors.As(err, &resp) && resp.Code == "PreconditionFailed" {
		return s.exists(ctx, name, data)
	}
	if err != nil {
		return s.wrap(ctx, "put", name, err)
	}
	return nil
}

// exists decides a create-only Put of a name that exists: lifeboat writes
// some names again with the same bytes (a pack or an index object named by
// its hash), which is no change; other bytes are refused.
func (s *S3) exists(ctx context.Context, name string, data []byte) error {
	old, err := s.get(ctx, "get", name, 0, -1)
	if err != nil {
		return err
	}
	if !bytes.Equal(old, data) {
		return fmt.Errorf("%s: put %s: it exists with other content, and puts are create-only (%s): %w", s, name, envCreate, ErrExists)
	}
	return nil
}

// Get returns the whole object.
func (s *S3) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	return s.get(ctx, "get", name, 0, -1)
}

// get returns length bytes at offset, or the whole object if length is
// negative. The response's Content-Length is checked before anything is
// allocated for it: a whole object must be within MaxSize, a range exactly
// the length asked for. A server that announces more than it sends costs
// no more memory than it sent.
func (s *S3) get(ctx context.Context, op, name string, offset, length int64) ([]byte, error) {
	var opts minio.GetObjectOptions
	if length >= 0 {
		if err := opts.SetRange(offset, offset+length-1); err != nil {
			return nil, fmt.Errorf("%s: %s %s: range %d+%d: %v: %w", s, op, name, offset, length, err, ErrPermanent)
		}
	}
	body, info, header, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, s.key(name), opts)
	if err != nil {
		return nil, s.wrap(ctx, op, name, err)
	}
	defer body.Close()
	if length < 0 {
		data, err := readCapped(s, name, body, info.Size)
		if err != nil && !errors.Is(err, ErrTooLarge) {
			err = s.wrap(ctx, op, name, fmt.Errorf("reading the response: %w", err))
		}
		return data, err
	}
	var r io.Reader = body
	if header.Get("Content-Range") == "" {
		// The server ignored the range and sends the whole object: skip to
		// the range and read only it.
		if info.Size >= 0 && (offset > info.Size || length > info.Size-offset) {
			return nil, fmt.Errorf("%s: %s %s: range %d+%d past the end of the object of %d bytes: %w",
				s, op, name, offset, length, info.Size, ErrOutOfRange)
		}
		if _, err := io.CopyN(io.Discard, body, offset); err != nil {
			return nil, s.wrap(ctx, op, name, fmt.Errorf("reading the response: %w", err))
		}
		r = io.LimitReader(body, length)
	} else if info.Size != length {
		// A range that starts inside the object but ends past it is
		// answered with the bytes that exist: past the end. A server may
		// also lie, announcing more than asked.
		sentinel := ErrOutOfRange
		if info.Size > length {
			sentinel = ErrTooLarge
		}
		return nil, fmt.Errorf("%s: %s %s: asked for %d bytes at %d, the response has %d: %w: %w",
			s, op, name, length, offset, info.Size, sentinel, ErrPermanent)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, s.wrap(ctx, op, name, fmt.Errorf("reading the response: %w", err))
	}
	return data, nil
}

// GetRange returns length bytes at offset with a ranged GET.
func (s *S3) GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error) {
	if done, data, err := checkRange(ctx, s, name, offset, length); done {
		return data, err
	}
	return s.get(ctx, "get range of", name, offset, length)
}

// checkRange checks a range read over HTTP before it is sent, and answers
// one of zero bytes, which HTTP cannot ask for, from the object's size: it
// reports done with the answer when no ranged request is needed.
func checkRange(ctx context.Context, s Store, name string, offset, length int64) (done bool, data []byte, err error) {
	if err := ctx.Err(); err != nil {
		return true, nil, err
	}
	if err := ValidName(name); err != nil {
		return true, nil, err
	}
	if offset < 0 || length < 0 || length > 0 && offset > (1<<63-1)-length {
		return true, nil, fmt.Errorf("%s: %s: invalid range %d+%d: %w", s, name, offset, length, ErrPermanent)
	}
	if length > 0 {
		return false, nil, nil
	}
	info, err := s.Stat(ctx, name)
	if err != nil {
		return true, nil, err
	}
	if offset > info.Size {
		return true, nil, fmt.Errorf("%s: %s: range %d+0 past the end of the object of %d bytes: %w",
			s, name, offset, info.Size, ErrOutOfRange)
	}
	return true, []byte{}, nil
}

// Stat returns the object's size with a HEAD request.
func (s *S3) Stat(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.wrap(ctx, "stat", name, err)
	}
	return Info{Name: name, Size: info.Size, Stored: info.LastModified}, nil
}

// List lists the keys under the store's prefix and prefix. Keys that are not
// valid object names (directory markers, foreign objects) are skipped.
func (s *S3) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("%s: listing: %w", s, err)
	}
	// Cancelling stops minio-go's iterator and any request it has in flight.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	noOwner := false
	objects := s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{
		Prefix:     s.key(prefix),
		Recursive:  true,
		FetchOwner: &noOwner,
	})
	for obj := range objects {
		if obj.Err != nil {
			return s.wrap(ctx, "list", prefix, obj.Err)
		}
		// minio-go's iterator ends silently when the context is cancelled.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: list %s: %w", s, prefix, err)
		}
		name, ok := strings.CutPrefix(obj.Key, s.prefix)
		if !ok || ValidName(name) != nil {
			continue
		}
		if err := fn(Info{Name: name, Size: obj.Size, Stored: obj.LastModified}); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: list %s: %w", s, prefix, err)
	}
	return nil
}

// Delete removes the object; S3 itself does not report missing objects.
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{})
	if err != nil {
		if err := s.wrap(ctx, "delete", name, err); !IsNotExist(err) {
			return err
		}
	}
	return nil
}

// headerCRC32C carries a PUT body's CRC-32C (Castagnoli), base64 of its
// four big-endian bytes, which S3 servers check against what they received.
const headerCRC32C = "x-amz-checksum-crc32c"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32cBase64(data []byte) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.Checksum(data, castagnoli))
	return base64.StdEncoding.EncodeToString(b[:])
}
