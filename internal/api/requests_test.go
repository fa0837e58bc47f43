package api

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Tier and policy requests carry durations as typed; the server parses
// them, refuses a bad one naming it, and lists what it saved as the list
// commands show it.
func TestTierAndPolicyRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := &Client{URL: e.url, Token: e.admin}
	var tier TierJSON
	if err := c.Do(ctx, "PUT", "/v1/tiers/gold", TierRequest{RPO: "15m", RTO: "1h", DrillEvery: "1d"}, &tier); err != nil {
		t.Fatal(err)
	}
	if tier.RPO.Text() != "15m" || tier.RTO.Text() != "1h" || tier.DrillText() != "every 1d" {
		t.Fatalf("tier: %+v, %s", tier, tier.DrillText())
	}
	var bronze TierJSON
	if err := c.Do(ctx, "PUT", "/v1/tiers/bronze", TierRequest{RPO: "1d"}, &bronze); err != nil || bronze.DrillText() != "server default" || bronze.RTO.Text() != "0s" {
		t.Fatalf("tier without drills: %+v, %v", bronze, err)
	}
	if err := c.Do(ctx, "PUT", "/v1/tiers/bad", TierRequest{RPO: "soon"}, nil); err == nil || !strings.Contains(err.Error(), `"soon"`) {
		t.Fatalf("a bad RPO: %v", err)
	}
	p := PolicyRequest{Every: "1h", Consistency: "crash", Vault: "/srv/vault", Keep: KeepRequest{Last: 3, Within: "7d"}}
	if err := p.ResolveVaults(ctx, c); err != nil || p.Vault != VaultName("/srv/vault") || p.CopyTo != "" {
		t.Fatalf("resolved %+v, %v", p, err)
	}
	var pol, nightly PolicyJSON
	if err := c.Do(ctx, "PUT", "/v1/policies/hourly", p, &pol); err != nil {
		t.Fatal(err)
	}
	if pol.ScheduleText() != "every 1h" || pol.Keep.Last != 3 || time.Duration(pol.Keep.Within) != 7*24*time.Hour || pol.Vault != p.Vault {
		t.Fatalf("policy: %+v", pol)
	}
	p = PolicyRequest{Cron: "30 2 * * *", Consistency: "crash", Vault: "/srv/vault"}
	if err := p.ResolveVaults(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "PUT", "/v1/policies/nightly", p, &nightly); err != nil || nightly.ScheduleText() != "30 2 * * *" || nightly.Vault != VaultName("/srv/vault") {
		t.Fatalf("cron policy: %+v, %v", nightly, err)
	}
	p.Keep.Within = "whenever"
	if err := c.Do(ctx, "PUT", "/v1/policies/nightly", p, nil); err == nil || !strings.Contains(err.Error(), "whenever") {
		t.Fatalf("a bad keep-within: %v", err)
	}
}
