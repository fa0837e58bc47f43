package api

import (
	"encoding/json"
	"net/http"

	"lifeboat/internal/catalog"
	"lifeboat/internal/job"
)

// DiscoverJSON is the body of POST /v1/discover: which agent looks (the
// server's built-in agent unless named) and where.
type DiscoverJSON struct {
	Agent string `json:"agent,omitempty"`
	Under string `json:"under,omitempty"`
}

// discover queues a discover job on an agent; its result lists the QEMU
// machines running on the agent's host.
func (s *Server) discover(w http.ResponseWriter, r *http.Request) error {
	var body DiscoverJSON
	if r.ContentLength != 0 {
		if err := decode(r, &body); err != nil {
			return err
		}
	}
	agent := body.Agent
	if agent == "" {
		agent = s.DefaultAgent
	}
	if agent == "" {
		return invalid("agent: required: this server runs no built-in agent")
	}
	spec := job.Discover{Under: body.Under}
	if err := spec.Validate(); err != nil {
		return err
	}
	raw, _ := json.Marshal(spec)
	return s.queued(w, r, catalog.Job{Kind: "discover", Agent: agent, Spec: raw, MaxAttempts: 1})
}
