package restore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrExists means a file a restore would create is already there.
var ErrExists = errors.New("already exists")

// createNew creates every file a restore makes: a new raw image's partial
// file, a new qcow2 image, the restored machine definition. It must not
// exist (O_EXCL), a symbolic link in its place is refused rather than
// followed (O_NOFOLLOW; O_EXCL alone refuses one too, this says so), and
// only its owner can read it (0600): a restored disk holds everything the
// machine held, and its definition says where the disks are.
func createNew(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s %w", path, ErrExists)
		}
		return nil, err
	}
	return f, nil
}
