// Package dashboard is the control plane's web dashboard: a few static
// files, embedded in the binary, served at / beside the API. The pages hold
// no data and no secret: their script asks the public JSON API for
// everything, with the API token the user pastes (kept in the tab's
// sessionStorage, sent as the Authorization header). So the dashboard needs
// nothing the API's scripts cannot have, no cookie is ever set and there is
// no CSRF surface, and a page is served without a token: until one is
// given, it shows the login form.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// CSP is the Content-Security-Policy of every dashboard file: scripts,
// styles and requests come only from this server, no inline script or
// style runs, nothing may frame the pages and forms post nowhere.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard: GET / is the page, GET /ui/... its script
// and style sheet. Mount it with Mount, beside the API.
func Handler() http.Handler {
	static, _ := fs.Sub(files, "static")
	assets := http.StripPrefix("/ui/", http.FileServerFS(static))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.Handle("GET /ui/{file}", assets)
	return secured(mux)
}

// Mount serves the dashboard at / and /ui/ and everything else with api.
func Mount(api http.Handler) http.Handler {
	dash := Handler()
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("GET /{$}", dash)
	mux.Handle("GET /ui/", dash)
	return mux
}

// secured adds the headers that keep the pages to themselves.
func secured(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		// Served from the binary: a new release must not be mixed with a
		// cached old script.
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
