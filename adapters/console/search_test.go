package console

import (
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var nextLink = regexp.MustCompile(`<a id="next-page" href="([^"]+)"`)

// TestSearchLimit pages through the recent decisions with ?limit=: each page has that many rows,
// its next-page link keeps the limit and the filters, and a limit out of range is refused.
func TestSearchLimit(t *testing.T) {
	st := filledStore(t, backends[0].fresh(t), 12) // 13 decisions (o-0 … o-11 and the <script> order)
	ts := httptest.NewServer(New(testStore{st}, Options{Authenticate: testAuth}))
	t.Cleanup(ts.Close)
	c := newClient(t, ts)
	wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in")

	rows := func(r response) int { return strings.Count(r.body, `<tr class="decision-row"`) }
	r := c.do("GET", "/ui/", nil)
	wantStatus(t, r, http.StatusOK, "the search page")
	if got := rows(r); got != 13 {
		t.Errorf("the search page without a limit shows %d rows, want all 13 (PageSize %d)", got, PageSize)
	}
	wantBody(t, r, "the search page", `name="limit" min="1" max="500" value="50"`)
	if nextLink.MatchString(r.body) {
		t.Errorf("the search page links to a next page with every row shown")
	}

	var pages []int
	path := "/ui/?limit=5&qualified=yes"
	for path != "" && len(pages) < 10 {
		r := c.do("GET", path, nil)
		wantStatus(t, r, http.StatusOK, path)
		pages = append(pages, rows(r))
		wantBody(t, r, path, `value="5"`)
		path = ""
		if m := nextLink.FindStringSubmatch(r.body); m != nil {
			path = html.UnescapeString(m[1])
			for _, want := range []string{"limit=5", "qualified=yes", "before="} {
				if !strings.Contains(path, want) {
					t.Errorf("the next page's link %s lacks %s", path, want)
				}
			}
		}
	}
	// o-5 is disqualified (banned traffic): 12 qualified decisions in pages of 5.
	if want := []int{5, 5, 2}; !slices.Equal(pages, want) {
		t.Errorf("the qualified decisions in pages of 5: got pages of %v rows, want %v", pages, want)
	}

	for _, limit := range []string{"0", "501", "ten", "-1"} {
		r := c.do("GET", "/ui/?limit="+limit, nil)
		wantStatus(t, r, http.StatusBadRequest, "limit="+limit)
		wantBody(t, r, "limit="+limit, "limit must be a number of rows from 1 to 500.")
	}
}
