package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
)

// get fetches path from srv and returns the response and its body.
func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// The dashboard is mounted beside a real API: the pages and their assets
// are served without a token, with the CSP on each; everything else is
// the API's, which still refuses a request without a token.
func TestServedBesideTheAPI(t *testing.T) {
	cat, err := catalog.Open(context.Background(), filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	apiSrv := &api.Server{Catalog: cat, Clock: clock.NewFake(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))}
	srv := httptest.NewServer(Mount(apiSrv.Handler()))
	defer srv.Close()

	for _, tc := range []struct{ path, ctype, file string }{
		{"/", "text/html", "index.html"},
		{"/ui/app.js", "text/javascript", "app.js"},
		{"/ui/app.css", "text/css", "app.css"},
		{"/ui/icon.svg", "image/svg+xml", "icon.svg"},
	} {
		resp, body := get(t, srv, "GET", tc.path)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", tc.path, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Fatalf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); csp != CSP {
			t.Fatalf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := resp.Header.Get(h); got != want {
				t.Fatalf("GET %s: %s %q, want %q", tc.path, h, got, want)
			}
		}
		if resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("GET %s set a cookie", tc.path)
		}
		embedded, err := files.ReadFile("static/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if body != string(embedded) {
			t.Fatalf("GET %s: not the embedded %s", tc.path, tc.file)
		}
	}

	// No token: the page is the login form, and holds no data.
	_, page := get(t, srv, "GET", "/")
	for _, want := range []string{`<form id="login-form">`, `<input id="token" name="token" type="password"`, `<script src="/ui/app.js" defer>`} {
		if !strings.Contains(page, want) {
			t.Fatalf("the page has no %q:\n%s", want, page)
		}
	}

	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/v1/machines", http.StatusUnauthorized}, // the API, still guarded
		{"GET", "/healthz", http.StatusOK},
		{"GET", "/ui/nope.js", http.StatusNotFound},
		{"GET", "/ui/", http.StatusNotFound}, // no directory listing
		{"GET", "/index.html", http.StatusNotFound},
		{"POST", "/", http.StatusNotFound},
	} {
		if resp, body := get(t, srv, tc.method, tc.path); resp.StatusCode != tc.code {
			t.Fatalf("%s %s: %d, want %d: %s", tc.method, tc.path, resp.StatusCode, tc.code, body)
		}
	}
}

// The files load nothing from elsewhere and hold no inline script, style
// or event handler (the CSP would refuse them: this finds them first).
func TestAssetsSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import`)
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle\s*=|\son[a-z]+\s*=|javascript:|innerHTML\s*=|insertAdjacentHTML|document\.write|eval\(`)
	for _, f := range []string{"index.html", "app.js", "app.css", "icon.svg"} {
		raw, err := files.ReadFile("static/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if m := external.Find(raw); m != nil {
			t.Fatalf("%s loads from elsewhere: %q", f, m)
		}
		if m := inline.Find(raw); m != nil {
			t.Fatalf("%s has inline code, markup injection or eval: %q", f, m)
		}
	}
}

// Every request the pages make is a route of the public API, with its
// method, as openapi.json describes it: the dashboard has no private path.
func TestPagesUseOnlyThePublicAPI(t *testing.T) {
	js, err := files.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]*\}`)
	routes := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			routes[strings.ToUpper(method)+" "+param.ReplaceAllString(path, "{}")] = true
		}
	}
	// api('GET', `/v1/machines/${enc(name)}/points?limit=50`) and
	// const p = `/v1/jobs/${enc(id)}` … api('POST', `${p}/cancel`).
	prefixes := map[string]string{}
	for _, m := range regexp.MustCompile("const (\\w+) = `(/v1/[^`]*)`").FindAllStringSubmatch(string(js), -1) {
		prefixes[m[1]] = m[2]
	}
	calls := regexp.MustCompile("api\\('([A-Z]+)', [`']([^`']*)[`']").FindAllStringSubmatch(string(js), -1)
	if len(calls) < 10 {
		t.Fatalf("found %d API calls in app.js: the pattern no longer matches the code", len(calls))
	}
	tmpl := regexp.MustCompile(`\$\{[^}]*\}`)
	for _, c := range calls {
		method, path := c[1], c[2]
		if v, rest, ok := strings.Cut(path, "}"); ok && strings.HasPrefix(v, "${") && prefixes[v[2:]] != "" {
			path = prefixes[v[2:]] + rest
		}
		path, _, _ = strings.Cut(path, "?")
		key := method + " " + tmpl.ReplaceAllString(path, "{}")
		if !routes[key] {
			t.Errorf("app.js calls %s %s (%s), which openapi.json does not describe", method, c[2], key)
		}
	}
}
