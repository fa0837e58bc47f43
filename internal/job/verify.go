package job

import (
	"context"
	"errors"
	"fmt"

	"lifeboat/internal/maintenance"
	"lifeboat/internal/vault"
)

// ErrProblemsFound is a verify that found the vault damaged.
var ErrProblemsFound = errors.New("verify found problems")

// RunVerify checks v (the vault vr.Vault names, opened). It returns the
// report also when it found problems, with an error wrapping
// ErrProblemsFound that counts them.
func RunVerify(ctx context.Context, v *vault.Vault, vr Verify, env Env) (*maintenance.VerifyReport, error) {
	rep, err := maintenance.Verify(ctx, v, maintenance.VerifyOptions{ReadData: vr.ReadData, Progress: env.VerifyProgress})
	if err != nil {
		return nil, err
	}
	if n := len(rep.Problems); n > 0 {
		return rep, fmt.Errorf("%w: %d problem(s)", ErrProblemsFound, n)
	}
	return rep, nil
}
