package job

import (
	"context"
	"fmt"

	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

// Forget applies a retention to a machine's points (every machine's when
// Machine is empty) and, with Prune, deletes the data no point needs.
type Forget struct {
	Machine string           `json:"machine,omitempty"`
	Vault   string           `json:"vault"`
	Keep    policy.Retention `json:"keep"`
	Prune   bool             `json:"prune,omitempty"`
	DryRun  bool             `json:"dry_run,omitempty"`
}

// Validate reports the first thing wrong with f. An empty retention is
// refused: it would mean "keep nothing" to a careless reader.
func (f Forget) Validate() error {
	if f.Machine != "" {
		if err := recovery.ValidName("machine", f.Machine); err != nil {
			return invalid("machine", "%v", err)
		}
	}
	if f.Vault == "" {
		return invalid("vault", "no vault to forget points in")
	}
	if err := f.Keep.Validate(); err != nil {
		return invalid("keep", "%v", err)
	}
	if f.Keep.Empty() {
		return invalid("keep", "no keep rule given: refusing to forget every point")
	}
	return nil
}

// Forgotten is what a forget did.
type Forgotten struct {
	*maintenance.ForgetResult
	Prune *maintenance.PruneReport // nil without Prune
}

// RunForget forgets the points f's retention does not keep in v (the vault
// f.Vault names, opened), then prunes when asked.
func RunForget(ctx context.Context, v *vault.Vault, f Forget, env Env) (*Forgotten, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	res, err := maintenance.Forget(ctx, v, f.Machine, f.Keep, f.DryRun)
	if err != nil {
		return nil, err
	}
	out := &Forgotten{ForgetResult: res}
	if f.DryRun {
		return out, nil
	}
	if env.Seen != nil {
		if err := env.Seen.Reset(v.Config().ID, res.Kept, v.Clock().Now()); err != nil {
			env.warn(err.Error())
		}
	}
	if f.Prune {
		if out.Prune, err = maintenance.Prune(ctx, v, maintenance.PruneOptions{}); err != nil {
			return out, err
		}
	}
	return out, nil
}

// Prune deletes the data of a vault that no point needs.
type Prune struct {
	Vault string `json:"vault"`
}

// Copy copies a machine's points (every machine's when Machine is empty)
// from one vault to its copy at another site.
type Copy struct {
	Machine string `json:"machine,omitempty"`
	From    string `json:"from"`
	To      string `json:"to"`
}

// Validate reports the first thing wrong with c.
func (c Copy) Validate() error {
	if c.Machine != "" {
		if err := recovery.ValidName("machine", c.Machine); err != nil {
			return invalid("machine", "%v", err)
		}
	}
	if c.From == "" || c.To == "" {
		return invalid("to", "a copy needs a source and a target vault")
	}
	if c.From == c.To {
		return invalid("to", "the target vault is the source")
	}
	return nil
}

// RunCopy copies what c names from the vault from to the vault to (the
// vaults c.From and c.To name, opened): only what the target lacks.
func RunCopy(ctx context.Context, from, to *vault.Vault, c Copy, env Env) (*vaultcopy.Stats, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	st, err := vaultcopy.Run(ctx, from, to, vaultcopy.Options{Machine: c.Machine, Seen: env.Seen, Progress: env.CopyProgress})
	if err != nil {
		return nil, err
	}
	for _, w := range st.Warnings {
		env.warn(fmt.Sprintf("copy %s: %s", to.Store(), w))
	}
	return st, nil
}

// Verify checks a vault: every object's authentication and the references
// between them, and with ReadData every stored chunk.
type Verify struct {
	Vault    string `json:"vault"`
	ReadData bool   `json:"read_data,omitempty"`
}
