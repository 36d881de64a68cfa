package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
)

const shopPolicy = `program: shop
version: 1
effective_from: 2025-01-01T00:00:00Z
rounding: half_up
qualify:
  - id: completed
    expr: order.status == "completed"
    reason: not completed
rates:
  - id: everyone
    when: "true"
    rate: "10%"
tests:
  - name: a completed order earns 10%
    order: {order_id: t-1, program: shop, affiliate_id: a, status: completed, placed_at: "2025-03-10T12:00:00Z",
      buyer: {id: b, country: US, new: true}, currency: USD, amount: "10.00"}
    expect: {qualified: true, commission: "1.00"}
`

// TestDeadLettersRedrive: an order of a program serve did not know is dead-lettered; once the
// program's policy is loaded, redrive decides it, once however often it is run; an event still
// bad is dead-lettered again with its reason, and the command says so (exit 1).
func TestDeadLettersRedrive(t *testing.T) {
	ctx := context.Background()
	natsCfg, _ := testBroker(t, stream.Config{})
	js := connectJS(t, natsCfg)
	if _, err := stream.EnsureStream(ctx, js, natsCfg); err != nil {
		t.Fatal(err)
	}
	policies := t.TempDir()
	if err := os.CopyFS(filepath.Join(policies, "alibaba"), os.DirFS(filepath.Join(repoPolicies(t), "alibaba"))); err != nil {
		t.Fatal(err)
	}
	shopOrder := `{"order_id":"s-1","program":"shop","affiliate_id":"a","status":"completed","placed_at":"2025-03-10T12:00:00Z",` +
		`"buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"25.00"}`
	badOrder := `{"order_id":"bad-1","program":"alibaba","affiliate_id":"a","status":"completed","placed_at":"2025-03-10T12:00:00Z",` +
		`"buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"-5"}`
	last := publishAll(t, js, natsCfg, [][]byte{[]byte(shopOrder), []byte(badOrder)})

	const token, operatorToken = "redrive-test-token-0123456789", "redrive-operator-token-0123456789"
	cfg := pipelineConfig(t)
	cfg.Policies = policies
	cfg.HTTP.Addr, cfg.HTTP.Tokens, cfg.HTTP.OperatorTokens = "127.0.0.1:0", []string{token}, []string{operatorToken}
	cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = natsCfg.URL, natsCfg.User, natsCfg.Password
	svc := startRunning(t, cfg)
	waitSettledService(t, svc, last, time.Minute)
	dls, err := svc.store.DeadLetters(ctx, store.DeadLetterFilter{})
	if err != nil || len(dls) != 2 {
		t.Fatalf("dead letters: %d, %v; want the shop order's and the bad one's", len(dls), err)
	}
	var shopDL, badDL store.DeadLetter
	for _, d := range dls {
		switch d.OrderID {
		case "s-1":
			shopDL = d
		case "bad-1":
			badDL = d
		}
	}
	if shopDL.Kind != "unknown_program" || badDL.Kind != "invalid" {
		t.Fatalf("dead letters: %+v, %+v; want unknown_program and invalid", shopDL, badDL)
	}

	rd, err := newRedriver(svc.cfg, svc.store, js)
	if err != nil {
		t.Fatal(err)
	}
	redrive := func(req httpapi.RedriveRequest) (string, error) {
		req.WaitSeconds = 30
		v, err := rd.Redrive(ctx, req)
		if err != nil {
			return "", err
		}
		var out bytes.Buffer
		writeRedrive(&out, v)
		if v.StillBad > 0 || v.Pending > 0 {
			return out.String(), exitCode(1)
		}
		return out.String(), nil
	}
	// Before the program is loaded, the event is still bad: dead-lettered again, with its reason.
	out, err := redrive(httpapi.RedriveRequest{Kind: "unknown_program"})
	if !errors.Is(err, exitCode(1)) || !regexp.MustCompile(`(?m)^dead letter \d+: still bad: dead letter \d+: unknown program "shop"`).MatchString(out) {
		t.Fatalf("redrive before the policy: %v\n%s", err, out)
	}
	// The policy arrives; the newest dead letter of the order is redriven (the first one was).
	if err := os.MkdirAll(filepath.Join(policies, "shop"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(policies, "shop", "v1.yaml"), []byte(shopPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := svc.reload(ctx); err != nil {
		t.Fatal(err)
	}
	out, err = redrive(httpapi.RedriveRequest{OrderID: "s-1"})
	if err != nil {
		t.Fatalf("redrive after the policy: %v\n%s", err, out)
	}
	for _, want := range []string{
		"published again as redrive:",              // the second dead letter (the first one's redrive)
		"redriven before: through dead letter(s) ", // the first: through the second, to its decision
		"redrive: 2 dead letter(s): 2 decided, 0 still bad, 0 not decided yet (1 redriven before)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("redrive output lacks %q:\n%s", want, out)
		}
	}
	ds, err := svc.store.DecisionsByOrder(ctx, "shop", "s-1")
	if err != nil || len(ds) != 1 || ds[0].Commission.Text('f') != "2.50" {
		t.Fatalf("order s-1: %d decisions (%v), want one paying 2.50", len(ds), err)
	}
	// Again: nothing is published, nothing decided twice.
	if out, _ := redrive(httpapi.RedriveRequest{IDs: []int64{shopDL.ID}}); !strings.Contains(out, "redriven before: through dead letter(s) ") || strings.Contains(out, "published again") {
		t.Errorf("a second redrive:\n%s", out)
	}
	if ds, _ := svc.store.DecisionsByOrder(ctx, "shop", "s-1"); len(ds) != 1 {
		t.Errorf("order s-1 has %d decisions after a second redrive, want 1", len(ds))
	}
	// An invalid event stays invalid.
	out, err = redrive(httpapi.RedriveRequest{IDs: []int64{badDL.ID}})
	if !errors.Is(err, exitCode(1)) || !strings.Contains(out, "still bad: dead letter") || !strings.Contains(out, "amount: -5 is negative") {
		t.Errorf("redriving the invalid event: %v\n%s", err, out)
	}
	// The same through /v1: reading with a reader's token, redriving with an operator's.
	callAs := func(token, method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, "http://"+svc.httpAddr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	call := func(method, path, body string) (int, []byte) {
		if method == "POST" {
			return callAs(operatorToken, method, path, body)
		}
		return callAs(token, method, path, body)
	}
	var page struct {
		DeadLetters []httpapi.DeadLetterView `json:"dead_letters"`
		NextCursor  string                   `json:"next_cursor"`
	}
	code, body := call("GET", "/v1/dead-letters?limit=3", "")
	if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.DeadLetters) != 3 || page.NextCursor == "" {
		t.Fatalf("GET /v1/dead-letters?limit=3: %d %s", code, body)
	}
	code, body = call("GET", "/v1/dead-letters?kind=invalid&cursor="+page.NextCursor, "")
	page.DeadLetters, page.NextCursor = nil, ""
	if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].Kind != "invalid" ||
		page.DeadLetters[0].Raw != nil || page.NextCursor != "" {
		t.Errorf("GET /v1/dead-letters?kind=invalid, second page: %d %s", code, body)
	}
	code, body = call("GET", "/v1/dead-letters/"+strconv.FormatInt(badDL.ID, 10), "")
	var one httpapi.DeadLetterView
	if err := json.Unmarshal(body, &one); code != 200 || err != nil || one.Raw == nil || *one.Raw != badOrder || one.Reason != badDL.Reason {
		t.Errorf("GET /v1/dead-letters/%d: %d %s", badDL.ID, code, body)
	}
	redriveBad := `{"ids": [` + strconv.FormatInt(badDL.ID, 10) + `], "wait_seconds": 5}`
	if code, body := callAs(token, "POST", "/v1/dead-letters/redrive", redriveBad); code != 403 || !bytes.Contains(body, []byte("operator")) {
		t.Errorf("POST /v1/dead-letters/redrive with a reader's token: %d %s, want 403", code, body)
	}
	code, body = call("POST", "/v1/dead-letters/redrive", redriveBad)
	var rv httpapi.RedriveView
	if err := json.Unmarshal(body, &rv); code != 200 || err != nil || rv.StillBad != 1 || rv.RedrivenBefore != 1 || rv.DeadLetters[0].Outcome != "still_bad" {
		t.Errorf("POST /v1/dead-letters/redrive: %d %s", code, body)
	}
	if code, body := call("POST", "/v1/dead-letters/redrive", `{}`); code != 400 || !bytes.Contains(body, []byte("name the dead letters")) {
		t.Errorf("POST /v1/dead-letters/redrive {}: %d %s, want 400", code, body)
	}
	if code, body := call("GET", "/v1/dead-letters?from=yesterday", ""); code != 400 {
		t.Errorf("GET /v1/dead-letters?from=yesterday: %d %s, want 400", code, body)
	}

	// The redriven decisions and dead letters are history like any other: they verify.
	if doc, failed := verifyJSON(t, svc.store); failed {
		t.Errorf("audit verify after redrives: %+v", doc)
	}
}
