package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestWhatIfPricesAShadowAsLive: a pasted shadow version (stage: shadow) is replayed as if it
// were in force, as `replay --policy` and POST /v1/replay price one: the same money as the same
// text without the stage line.
func TestWhatIfPricesAShadowAsLive(t *testing.T) {
	st := filledStore(t, backends[0].fresh(t), 30)
	c := signedIn(t, st)
	token := csrf(t, c.do("GET", "/ui/whatif", nil))
	live := candidate5(t)
	shadow := strings.Replace(live, "version: 2\n", "version: 2\nstage: shadow\n", 1)
	if shadow == live {
		t.Fatal("the candidate has no line version: 2")
	}
	want := c.do("POST", "/ui/whatif", url.Values{"csrf": {token}, "policy": {live}})
	wantStatus(t, want, http.StatusOK, "the live candidate's what-if")
	got := c.do("POST", "/ui/whatif", url.Values{"csrf": {token}, "policy": {shadow}})
	wantStatus(t, got, http.StatusOK, "the shadow's what-if")
	g, w := totalsOf(t, got.body), totalsOf(t, want.body)
	if len(g) == 0 || len(g) != len(w) {
		t.Fatalf("the shadow's what-if shows %d currencies, the live text's %d:\n%s", len(g), len(w), got.body)
	}
	for cur, tot := range w {
		if g[cur] != tot {
			t.Errorf("%s: the shadow's what-if shows %v, the live text's %v", cur, g[cur], tot)
		}
	}
	if usd := g["USD"]; !strings.HasPrefix(usd[2], "-") {
		t.Errorf("USD difference %q: want the 6%% → 5%% saving", usd[2])
	}
}
