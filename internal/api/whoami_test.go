package api

import (
	"testing"

	"lifeboat/internal/catalog"
)

// GET /v1/whoami names the token and its role, for every human role; an
// agent token, or none, is refused as on any other route.
func TestWhoami(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ name, role string }{
		{"watcher", catalog.RoleViewer}, {"ops", catalog.RoleOperator}, {"root2", catalog.RoleAdmin},
	} {
		var got CallerJSON
		e.ok(e.do(e.token(tc.name, tc.role), "GET", "/v1/whoami", nil, &got))
		if got != (CallerJSON{Name: tc.name, Role: tc.role}) {
			t.Fatalf("whoami for %s (%s): %+v", tc.name, tc.role, got)
		}
	}
	if code, body := e.do(e.token("hv1", catalog.RoleAgent), "GET", "/v1/whoami", nil, nil); code != 403 {
		t.Fatalf("agent token: %d %s", code, body)
	}
	if code, _ := e.do("", "GET", "/v1/whoami", nil, nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
}
