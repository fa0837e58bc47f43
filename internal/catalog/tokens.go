package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Roles a token can have.
const (
	RoleAdmin    = "admin"    // everything
	RoleOperator = "operator" // run jobs, restore
	RoleViewer   = "viewer"   // read
	RoleAgent    = "agent"    // an agent: heartbeat, claim and report its jobs
)

// Token is an API token as the catalog keeps it: its hash, never the
// secret itself.
type Token struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
	Revoked time.Time `json:"revoked,omitzero"`
}

// AddToken records a token by the hash of its secret (the caller hashes).
func (c *Catalog) AddToken(ctx context.Context, name, role, hash string, now time.Time) (Token, error) {
	if err := validName("token", name); err != nil {
		return Token{}, err
	}
	switch role {
	case RoleAdmin, RoleOperator, RoleViewer, RoleAgent:
	default:
		return Token{}, fmt.Errorf("%w: role %q: want admin, operator, viewer or agent", ErrInvalid, role)
	}
	if hash == "" {
		return Token{}, fmt.Errorf("%w: token %q has no hash", ErrInvalid, name)
	}
	t := Token{ID: newID(), Name: name, Role: role, Created: now.UTC().Truncate(time.Millisecond)}
	_, err := c.db.ExecContext(ctx, c.q(`INSERT INTO tokens (id, name, role, hash, created_ms) VALUES (?, ?, ?, ?, ?)`),
		t.ID, name, role, hash, ms(now))
	if isUniqueViolation(err) {
		return Token{}, fmt.Errorf("catalog: token %q: %w", name, ErrExists)
	}
	if err != nil {
		return Token{}, fmt.Errorf("catalog: adding token %q: %w", name, err)
	}
	return t, nil
}

// TokenByHash finds the live (not revoked) token with that hash.
func (c *Catalog) TokenByHash(ctx context.Context, hash string) (Token, error) {
	var t Token
	var created int64
	err := c.db.QueryRowContext(ctx, c.q(`SELECT id, name, role, created_ms FROM tokens WHERE hash = ? AND revoked_ms IS NULL`), hash).
		Scan(&t.ID, &t.Name, &t.Role, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, fmt.Errorf("catalog: token: %w", ErrNotFound)
	}
	if err != nil {
		return Token{}, fmt.Errorf("catalog: looking up a token: %w", err)
	}
	t.Created = fromMS(created)
	return t, nil
}

// RevokeToken revokes the token named name from now on.
func (c *Catalog) RevokeToken(ctx context.Context, name string, now time.Time) error {
	res, err := c.db.ExecContext(ctx, c.q(`UPDATE tokens SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL`), ms(now), name)
	if err != nil {
		return fmt.Errorf("catalog: revoking token %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("catalog: live token %q: %w", name, ErrNotFound)
	}
	return nil
}

// Tokens lists the tokens by name, revoked ones included.
func (c *Catalog) Tokens(ctx context.Context) ([]Token, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT id, name, role, created_ms, revoked_ms FROM tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		var t Token
		var created int64
		var revoked sql.NullInt64
		if err := rows.Scan(&t.ID, &t.Name, &t.Role, &created, &revoked); err != nil {
			return nil, fmt.Errorf("catalog: reading tokens: %w", err)
		}
		t.Created, t.Revoked = fromMS(created), nullMS(revoked)
		out = append(out, t)
	}
	return out, rows.Err()
}
