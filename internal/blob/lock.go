package blob

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// Retention modes of S3 Object Lock. Under either, an object version
// cannot be deleted or overwritten before its date; a governance
// retention can be lifted by credentials holding
// s3:BypassGovernanceRetention, a compliance retention by nobody, not even
// the bucket's owner.
const (
	LockCompliance = "compliance"
	LockGovernance = "governance"
)

// ErrLocked marks a delete refused because the object is under a retention.
var ErrLocked = fmt.Errorf("object is locked (S3 Object Lock retention): %w", ErrPermanent)

// ErrNoLock means the store cannot lock objects: not S3, or a bucket
// created without Object Lock.
var ErrNoLock = fmt.Errorf("the store has no object lock: %w", ErrPermanent)

// Retention is an object's lock: its mode and the date until which it
// holds. The zero Retention is no lock.
type Retention struct {
	Mode  string
	Until time.Time
}

// Locker is implemented by stores that can lock objects (S3 buckets with
// Object Lock). A bucket with Object Lock is versioned: a delete by name
// only hides an object behind a delete marker, so DeleteVersions is what
// removes one.
type Locker interface {
	// CheckLock returns nil if the store can lock objects, else ErrNoLock
	// saying why.
	CheckLock(ctx context.Context) error
	// PutRetained is Put with the new object locked as r says.
	PutRetained(ctx context.Context, name string, data []byte, r Retention) error
	// Retain sets the lock of the object's current version to r. A
	// compliance retention can only be extended.
	Retain(ctx context.Context, name string, r Retention) error
	// RetentionOf returns the lock of the object's current version (the
	// zero Retention if none), or ErrNotExist.
	RetentionOf(ctx context.Context, name string) (Retention, error)
	// DeleteVersions removes every version of the object (and its delete
	// markers), failing with ErrLocked, having removed the unlocked ones,
	// if one is locked. A missing object is not an error.
	DeleteVersions(ctx context.Context, name string) error
}

func minioMode(mode string) (minio.RetentionMode, error) {
	switch mode {
	case LockCompliance:
		return minio.Compliance, nil
	case LockGovernance:
		return minio.Governance, nil
	}
	return "", fmt.Errorf("unknown lock mode %q (want %s or %s): %w", mode, LockCompliance, LockGovernance, ErrPermanent)
}

// CheckLock asks the bucket for its Object Lock configuration.
func (s *S3) CheckLock(ctx context.Context) error {
	enabled, _, _, _, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	if err != nil {
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && resp.Code == "ObjectLockConfigurationNotFoundError" {
			enabled = ""
		} else {
			return s.wrap(ctx, "reading the object lock configuration of", "", err)
		}
	}
	if enabled != "Enabled" {
		return fmt.Errorf("%s: bucket %q was created without Object Lock, which cannot be turned on later for it here: "+
			"create a bucket with it (aws s3api create-bucket --object-lock-enabled-for-bucket, mc mb --with-lock): %w", s, s.bucket, ErrNoLock)
	}
	return nil
}

// PutRetained stores data locked until r.Until, with one request.
func (s *S3) PutRetained(ctx context.Context, name string, data []byte, r Retention) error {
	mode, err := minioMode(r.Mode)
	if err != nil {
		return err
	}
	return s.put(ctx, name, data, minio.PutObjectOptions{Mode: mode, RetainUntilDate: r.Until.UTC()})
}

// Retain sets the retention of the current version.
func (s *S3) Retain(ctx context.Context, name string, r Retention) error {
	if err := ValidName(name); err != nil {
		return err
	}
	mode, err := minioMode(r.Mode)
	if err != nil {
		return err
	}
	until := r.Until.UTC()
	err = s.client.PutObjectRetention(ctx, s.bucket, s.key(name), minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until})
	if err != nil {
		return s.wrap(ctx, "lock", name, err)
	}
	return nil
}

// RetentionOf reads the retention of the current version.
func (s *S3) RetentionOf(ctx context.Context, name string) (Retention, error) {
	if err := ValidName(name); err != nil {
		return Retention{}, err
	}
	mode, until, err := s.client.GetObjectRetention(ctx, s.bucket, s.key(name), "")
	if err != nil {
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && (resp.Code == "NoSuchObjectLockConfiguration" || resp.Code == "ObjectLockConfigurationNotFoundError") {
			return Retention{}, nil
		}
		return Retention{}, s.wrap(ctx, "reading the lock of", name, err)
	}
	var r Retention
	if mode != nil {
		r.Mode = strings.ToLower(string(*mode))
	}
	if until != nil {
		r.Until = *until
	}
	return r, nil
}

// DeleteVersions lists the versions of the key and removes each.
func (s *S3) DeleteVersions(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var versions []string
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.key(name), WithVersions: true}) {
		if obj.Err != nil {
			return s.wrap(ctx, "listing the versions of", name, obj.Err)
		}
		if obj.Key == s.key(name) {
			versions = append(versions, obj.VersionID)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: listing the versions of %s: %w", s, name, err)
	}
	var locked error
	for _, v := range versions {
		err := s.client.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{VersionID: v})
		if err == nil {
			continue
		}
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && resp.Code == "NoSuchVersion" {
			continue
		}
		if isLockRefusal(err) {
			if errors.As(err, &resp) {
				err = fmt.Errorf("%s (%s)", resp.Message, resp.Code)
			}
			locked = fmt.Errorf("%s: delete %s (version %s): %w: %v", s, name, v, ErrLocked, err)
			continue
		}
		return s.wrap(ctx, "delete", name, err)
	}
	return locked
}

// isLockRefusal reports whether S3 refused to delete or overwrite a version
// because of its retention: AWS answers AccessDenied, MinIO
// ObjectLocked ("Object is WORM protected and cannot be overwritten").
func isLockRefusal(err error) bool {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return false
	}
	msg := strings.ToLower(resp.Message)
	return resp.Code == "ObjectLocked" || strings.Contains(msg, "worm") || strings.Contains(msg, "object lock") ||
		resp.Code == "AccessDenied" && strings.Contains(msg, "retention")
}

// The Retry wrapper passes locking on, retrying like the other calls.

func (r *retry) locker() (Locker, error) {
	l, ok := r.store.(Locker)
	if !ok {
		return nil, fmt.Errorf("%s: %w", r.store, ErrNoLock)
	}
	return l, nil
}

func (r *retry) CheckLock(ctx context.Context) error {
	l, err := r.locker()
	if err != nil {
		return err
	}
	return r.do(ctx, func() (bool, error) { return false, l.CheckLock(ctx) })
}

func (r *retry) PutRetained(ctx context.Context, name string, data []byte, ret Retention) error {
	l, err := r.locker()
	if err != nil {
		return err
	}
	return r.do(ctx, func() (bool, error) { return false, l.PutRetained(ctx, name, data, ret) })
}

func (r *retry) Retain(ctx context.Context, name string, ret Retention) error {
	l, err := r.locker()
	if err != nil {
		return err
	}
	return r.do(ctx, func() (bool, error) { return false, l.Retain(ctx, name, ret) })
}

func (r *retry) RetentionOf(ctx context.Context, name string) (Retention, error) {
	l, err := r.locker()
	if err != nil {
		return Retention{}, err
	}
	var ret Retention
	err = r.do(ctx, func() (bool, error) {
		var err error
		ret, err = l.RetentionOf(ctx, name)
		return false, err
	})
	return ret, err
}

func (r *retry) DeleteVersions(ctx context.Context, name string) error {
	l, err := r.locker()
	if err != nil {
		return err
	}
	return r.do(ctx, func() (bool, error) { return false, l.DeleteVersions(ctx, name) })
}
