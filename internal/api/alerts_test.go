package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/catalog"
)

// POST /v1/alerts/{id}/ack, on SQLite and PostgreSQL: an operator
// acknowledges an open alert, which is listed with who and when and stays
// open; a viewer and an agent may not; an unknown alert is 404, a cleared
// one 400.
func TestAckAlert(t *testing.T) { engines(t, testAckAlert) }

func testAckAlert(t *testing.T, e *env) {
	ctx := context.Background()
	if _, err := e.cat.Raise(ctx, "rpo-missed", "web1", "RPO missed", t0); err != nil {
		t.Fatal(err)
	}
	viewer := e.token("v", catalog.RoleViewer)
	op := e.token("ops", catalog.RoleOperator)
	agent := e.token("hv1", catalog.RoleAgent)
	var open []catalog.Alert
	e.ok(e.do(viewer, "GET", "/v1/alerts", nil, &open))
	if len(open) != 1 {
		t.Fatalf("open alerts: %+v", open)
	}
	ack := "/v1/alerts/" + open[0].ID + "/ack"
	for _, tok := range []string{viewer, agent} {
		if code, body := e.do(tok, "POST", ack, nil, nil); code != 403 {
			t.Fatalf("acknowledged by a viewer or an agent: %d %s", code, body)
		}
	}
	e.clock.Advance(time.Minute)
	var a catalog.Alert
	e.ok(e.do(op, "POST", ack, nil, &a))
	if a.AckedBy != "ops" || !a.Acked.Equal(t0.Add(time.Minute)) || !a.Cleared.IsZero() {
		t.Fatalf("acknowledged: %+v", a)
	}
	open = nil
	e.ok(e.do(viewer, "GET", "/v1/alerts", nil, &open))
	if len(open) != 1 || open[0].AckedBy != "ops" {
		t.Fatalf("listed after the acknowledgement: %+v", open)
	}
	if code, body := e.do(op, "POST", "/v1/alerts/nope/ack", nil, nil); code != 404 {
		t.Fatalf("an unknown alert: %d %s", code, body)
	}
	if _, err := e.cat.Resolve(ctx, "rpo-missed", "web1", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if code, body := e.do(op, "POST", ack, nil, nil); code != 400 || !strings.Contains(body, "cleared") {
		t.Fatalf("a cleared alert: %d %s", code, body)
	}
}
