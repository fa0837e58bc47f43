// Package api is the control plane's HTTP/JSON interface: what the CLI's
// server commands, the agents and the dashboard all speak. Handlers are
// thin: they authenticate, decode, call the catalog (and, for jobs, the
// queue it keeps), and encode. One function maps errors to statuses.
//
// Conventions, for every route:
//
//   - Nothing but /healthz answers without a token. A token is sent as
//     "Authorization: Bearer SECRET"; the catalog keeps only its SHA-256.
//     Roles: viewer reads; operator also runs, cancels and retries jobs
//     and acknowledges alerts; admin also changes objects and tokens; agent
//     only speaks the agent routes (/v1/agent/...), for its own name.
//   - Refusals say why: 401 (no or unknown token), 403 (role too low),
//     400 naming the field, 404, 409 (exists, or a lease lost). Bodies of
//     errors are {"error": "..."}.
//   - Durations are strings ("15m", "1h", "7d"); times are RFC 3339 UTC.
//   - Every write of one object is one catalog transaction: a refused
//     request changes nothing.
//
// The routes are listed in openapi.json (served at /openapi.json), which a
// test checks against the handlers.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
	"lifeboat/internal/job"
	"lifeboat/internal/schedule"
	"lifeboat/internal/secrets"
)

//go:embed openapi.json
var openAPI []byte

// Server serves the API over a catalog.
type Server struct {
	Catalog *catalog.Catalog
	Clock   clock.Clock
	Log     *slog.Logger
	// DefaultAgent is the agent of machines added without one: the
	// server's built-in agent, whose host has the disks a path names.
	// Empty: any agent may run their jobs.
	DefaultAgent string
	// Secrets keeps vault credentials (PUT /v1/vaults/NAME with a
	// password or S3 settings); agents receive those of a job's vaults
	// with the job. Nil: the server keeps none.
	Secrets *secrets.File
	// Alerted, if set, is told of each alert a finished job opened
	// (raised) or cleared (verify-failed, drill-failed), as the scheduler
	// tells its webhooks of the alerts it raises.
	Alerted func(raised bool, kind, subject, message string, at time.Time)

	metricsOnce sync.Once
	m           *metrics
}

// HashToken is how a token's secret is kept: hex SHA-256. Tokens are long
// random strings, so a fast hash is enough.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// roleRank orders the human roles; agent stands apart.
var roleRank = map[string]int{catalog.RoleViewer: 1, catalog.RoleOperator: 2, catalog.RoleAdmin: 3}

type ctxKey struct{}

// caller is who made a request.
type caller struct {
	token catalog.Token
}

// Handler returns the API's handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	for _, rt := range s.routes() {
		mux.Handle(rt.pattern, s.authorize(rt.role, rt.handle))
	}
	return mux
}

// route is one authenticated endpoint.
type route struct {
	pattern string // Go ServeMux pattern: "METHOD /path/{param}"
	role    string // least role allowed; catalog.RoleAgent for agent routes
	handle  func(w http.ResponseWriter, r *http.Request) error
}

func (s *Server) routes() []route {
	const (
		viewer   = catalog.RoleViewer
		operator = catalog.RoleOperator
		admin    = catalog.RoleAdmin
		agent    = catalog.RoleAgent
	)
	return []route{
		{"GET /metrics", viewer, func(w http.ResponseWriter, r *http.Request) error { s.metricsHandler().ServeHTTP(w, r); return nil }},
		{"GET /v1/tiers", viewer, s.listTiers},
		{"PUT /v1/tiers/{name}", admin, s.putTier},
		{"DELETE /v1/tiers/{name}", admin, s.deleteTier},
		{"GET /v1/vaults", viewer, s.listVaults},
		{"PUT /v1/vaults/{name}", admin, s.putVault},
		{"POST /v1/vaults/{name}/verify", operator, s.verifyVault},
		{"POST /v1/discover", operator, s.discover},
		{"GET /v1/policies", viewer, s.listPolicies},
		{"GET /v1/policies/{name}", viewer, s.getPolicy},
		{"PUT /v1/policies/{name}", admin, s.putPolicy},
		{"DELETE /v1/policies/{name}", admin, s.deletePolicy},
		{"GET /v1/machines", viewer, s.listMachines},
		{"POST /v1/machines", admin, s.addMachine},
		{"GET /v1/machines/{name}", viewer, s.getMachine},
		{"DELETE /v1/machines/{name}", admin, s.deleteMachine},
		{"POST /v1/machines/{name}/protect", admin, s.protect},
		{"POST /v1/machines/{name}/backup", operator, s.backupNow},
		{"POST /v1/machines/{name}/restore", operator, s.restoreMachine},
		{"POST /v1/machines/{name}/drill", operator, s.drillMachine},
		{"GET /v1/machines/{name}/points", viewer, s.listPoints},
		{"GET /v1/jobs", viewer, s.listJobs},
		{"GET /v1/jobs/{id}", viewer, s.getJob},
		{"GET /v1/jobs/{id}/logs", viewer, s.jobLogs},
		{"POST /v1/jobs/{id}/cancel", operator, s.cancelJob},
		{"GET /v1/alerts", viewer, s.listAlerts},
		{"POST /v1/alerts/{id}/ack", operator, s.ackAlert},
		{"GET /v1/drills", viewer, s.listDrills},
		{"GET /v1/agents", viewer, s.listAgents},
		{"GET /v1/replications", viewer, s.listReplications},
		{"PUT /v1/replications/{name}", admin, s.putReplication},
		{"DELETE /v1/replications/{name}", admin, s.deleteReplication},
		{"DELETE /v1/agents/{name}", admin, s.deleteAgent},
		{"GET /v1/tokens", admin, s.listTokens},
		{"POST /v1/tokens", admin, s.addToken},
		{"DELETE /v1/tokens/{name}", admin, s.revokeToken},
		{"GET /v1/whoami", viewer, s.whoami},
		{"POST /v1/agent/heartbeat", agent, s.agentHeartbeat},
		{"POST /v1/agent/claim", agent, s.agentClaim},
		{"POST /v1/agent/replications", agent, s.agentReplications},
		{"GET /v1/agent/replications", agent, s.agentReplicationSpecs},
		{"POST /v1/agent/jobs/{id}/renew", agent, s.agentRenew},
		{"POST /v1/agent/jobs/{id}/finish", agent, s.agentFinish},
		{"POST /v1/agent/jobs/{id}/log", agent, s.agentLog},
	}
}

// authorize checks the bearer token and its role before calling h, and
// turns h's error into a status.
func (s *Server) authorize(least string, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lifeboat"`)
			writeError(w, http.StatusUnauthorized, "no token: send Authorization: Bearer TOKEN (lifeboat --token-file or LIFEBOAT_TOKEN)")
			return
		}
		tok, err := s.Catalog.TokenByHash(r.Context(), HashToken(secret))
		if errors.Is(err, catalog.ErrNotFound) {
			writeError(w, http.StatusUnauthorized, "unknown or revoked token")
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if reason := allowed(tok.Role, least); reason != "" {
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %q (%s): %s", tok.Name, tok.Role, reason))
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, caller{token: tok}))
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// allowed says why role may not call a route needing least ("" if it may).
func allowed(role, least string) string {
	if least == catalog.RoleAgent || role == catalog.RoleAgent {
		if role == least {
			return ""
		}
		if least == catalog.RoleAgent {
			return "only agent tokens speak the agent routes"
		}
		return "agent tokens speak only the agent routes"
	}
	if roleRank[role] < roleRank[least] {
		return "this needs the " + least + " role"
	}
	return ""
}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(ctxKey{}).(caller)
	return c
}

// badRequest is an error in the request itself: 400.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func invalid(format string, args ...any) error { return badRequest{fmt.Sprintf(format, args...)} }

// status is the one place errors become HTTP statuses.
func status(err error) int {
	var br badRequest
	switch {
	case errors.As(err, &br), errors.Is(err, catalog.ErrInvalid), errors.Is(err, schedule.ErrInvalid), errors.Is(err, job.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, catalog.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, catalog.ErrExists), errors.Is(err, catalog.ErrLeaseLost), errors.Is(err, catalog.ErrInUse):
		return http.StatusConflict
	case errors.Is(err, context.Canceled):
		return 499 // the client went away
	}
	return http.StatusInternalServerError
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := status(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		s.log().Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	// The catalog's errors start with "catalog: "; users asked the API.
	writeError(w, code, strings.TrimPrefix(msg, "catalog: "))
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// Compact: listings of thousands of machines are encoded on every
	// dashboard refresh; clients indent (the CLI's --json does).
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// failingField finds which top-level field of the body v's own decoding
// (a Duration's, say) refused, since encoding/json names the field only for
// type mismatches.
func failingField(v any, body []byte) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return ""
	}
	rv := reflect.ValueOf(v).Elem()
	if rv.Kind() != reflect.Struct {
		return ""
	}
	for i := 0; i < rv.NumField(); i++ {
		tag, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("json"), ",")
		raw, ok := fields[tag]
		if !ok || tag == "" {
			continue
		}
		if json.Unmarshal(raw, reflect.New(rv.Field(i).Type()).Interface()) != nil {
			return tag
		}
	}
	return ""
}

// maxBody bounds every request body: objects are small.
const maxBody = 1 << 20

// decode reads a JSON body into v, refusing unknown fields, trailing data
// and bodies over maxBody, with the error naming what was wrong.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return invalid("body: %v", err)
	}
	if len(body) > maxBody {
		return invalid("body: larger than %d bytes", maxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return invalid("empty body: a JSON object is expected")
		}
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			if f := failingField(v, body); f != "" {
				return invalid("%s: %v", f, err)
			}
		}
		return invalid("body: %v", err)
	}
	if dec.More() {
		return invalid("body: more than one JSON value")
	}
	return nil
}
