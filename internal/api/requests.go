package api

import (
	"context"
	"fmt"
)

// The bodies of PUT /v1/tiers/{name} and PUT /v1/policies/{name} as a
// command line gives them: durations as typed ("15m", "7d"), for the
// server to parse and to refuse naming the field.

// TierRequest is a tier to create or replace.
type TierRequest struct {
	None       bool   `json:"none"`
	RPO        string `json:"rpo,omitempty"`
	RTO        string `json:"rto,omitempty"`
	DrillEvery string `json:"drill_every,omitempty"`
}

// KeepRequest is a policy's retention.
type KeepRequest struct {
	Last    int    `json:"last"`
	Hourly  int    `json:"hourly"`
	Daily   int    `json:"daily"`
	Weekly  int    `json:"weekly"`
	Monthly int    `json:"monthly"`
	Yearly  int    `json:"yearly"`
	Within  string `json:"within,omitempty"`
}

// PolicyRequest is a backup policy to create or replace. Vault and CopyTo
// may name a vault by its URL until ResolveVaults.
type PolicyRequest struct {
	Every       string      `json:"every,omitempty"`
	Cron        string      `json:"cron"`
	Stagger     string      `json:"stagger,omitempty"`
	Keep        KeepRequest `json:"keep"`
	Consistency string      `json:"consistency"`
	Vault       string      `json:"vault,omitempty"`
	CopyTo      string      `json:"copy_to"`
}

// ResolveVaults turns the policy's vault references (a name, or a URL the
// server knows) into the server's names for them (Client.VaultRef).
func (p *PolicyRequest) ResolveVaults(ctx context.Context, c *Client) error {
	var err error
	if p.Vault, err = c.VaultRef(ctx, p.Vault); err != nil {
		return err
	}
	p.CopyTo, err = c.VaultRef(ctx, p.CopyTo)
	return err
}

// DrillText says how often the tier's machines are drilled: "every 1d",
// or "server default".
func (t TierJSON) DrillText() string {
	if t.DrillEvery > 0 {
		return "every " + t.DrillEvery.Text()
	}
	return "server default"
}

// ScheduleText is the policy's schedule: its cron expression, or
// "every 1h".
func (p PolicyJSON) ScheduleText() string {
	if p.Cron != "" {
		return p.Cron
	}
	return fmt.Sprintf("every %s", p.Every.Text())
}
