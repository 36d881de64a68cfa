package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestConsoleHealthOnTheService: the health page of a running service shows its policy load,
// the order stream's backlog per partition, read from JetStream, and runs audit verify in the
// background, recording it.
func TestConsoleHealthOnTheService(t *testing.T) {
	const token = "console-ops-test-token-0123456789"
	_, svc := pipelineStore(t, "", 30, token)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	base := "http://" + svc.httpAddr
	csrfField := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)
	do := func(method, path string, form url.Values) string {
		t.Helper()
		var res *http.Response
		var err error
		if form == nil {
			res, err = hc.Get(base + path)
		} else {
			res, err = hc.PostForm(base+path, form)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d\n%s", method, path, res.StatusCode, b)
		}
		return string(b)
	}
	csrf := func(page string) string {
		m := csrfField.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no csrf field:\n%s", page)
		}
		return m[1]
	}
	login := do("GET", "/ui/login", nil)
	do("POST", "/ui/login", url.Values{"csrf": {csrf(login)}, "token": {token}})

	h := do("GET", "/ui/health", nil)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`<tr class="policy-load applied"><td>[0-9T:Z-]+</td><td>applied</td><td class="reason">alibaba v1</td></tr>`),
		regexp.MustCompile(`<p id="lag-total">0 event\(s\) waiting to be delivered, 0 delivered and not acknowledged yet.</p>`),
		regexp.MustCompile(`<tr class="lag" data-partition="0"><td class="num">0</td><td class="num">0</td><td class="num">0</td><td>[A-Za-z0-9_-]+</td></tr>`),
		regexp.MustCompile(`<p id="verify-none">`),
	} {
		if !want.MatchString(h) {
			t.Errorf("the health page lacks %s:\n%s", want, h)
		}
	}
	if n := strings.Count(h, `<tr class="lag" `); n != svc.cfg.NATS.Partitions {
		t.Errorf("the health page lists %d partitions, want %d", n, svc.cfg.NATS.Partitions)
	}

	do("POST", "/ui/health/verify", url.Values{"csrf": {csrf(h)}})
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(h, `id="verify-last"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no audit verify recorded a minute after it was started:\n%s", h)
		}
		time.Sleep(200 * time.Millisecond)
		h = do("GET", "/ui/health", nil)
	}
	for _, want := range []string{`<dl id="verify-last" class="fields verify ok" data-ok="true">`, `<dd id="verify-verdict">OK: nothing found</dd>`,
		`by console reader`, `<dd id="verify-decisions">30 (30 reproduced exactly)`} {
		if !strings.Contains(h, want) {
			t.Errorf("the health page after audit verify lacks %q:\n%s", want, h)
		}
	}
}
