package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// policyPath is the page of a stored policy version; policiesPath the list of a program's.
func policyPath(program string, version int) string {
	return policiesPath(program) + "/" + strconv.Itoa(version)
}

func policiesPath(program string) string { return "/ui/policies/" + url.PathEscape(program) }

// versionRow is a stored policy version as the lists show it.
type versionRow struct {
	Program, URL, Effective, Digest, File string
	Version                               int
	Decisions                             int64
	Current                               bool // the one the page shows
}

type policiesData struct {
	Program  string // "" every program
	Versions []versionRow
}

// policies lists the stored policy versions: of every program, or of one ({program}).
func (c *Console) policies(w http.ResponseWriter, r *http.Request, s *session) error {
	program := r.PathValue("program")
	rows, err := c.versionRows(r, program, 0)
	if err != nil {
		return err
	}
	if program != "" && len(rows) == 0 {
		return pageError{http.StatusNotFound, fmt.Sprintf("Program %s has no stored policy version: none has decided anything.", program)}
	}
	title := "Policies"
	if program != "" {
		title = "Policies of " + program
	}
	c.render(w, http.StatusOK, "policies", s.page(title, policiesData{Program: program, Versions: rows}))
	return nil
}

// versionRows are the stored versions of a program ("" every program) with their decision
// counts; current marks the one a page shows.
func (c *Console) versionRows(r *http.Request, program string, current int) ([]versionRow, error) {
	ctx := r.Context()
	sps, err := c.st.PolicyVersions(ctx, program)
	if err != nil {
		return nil, err
	}
	counts := map[string]map[int]int64{}
	var rows []versionRow
	for _, sp := range sps {
		if counts[sp.Program] == nil {
			if counts[sp.Program], err = c.st.PolicyDecisionCounts(ctx, sp.Program); err != nil {
				return nil, err
			}
		}
		rows = append(rows, versionRow{Program: sp.Program, URL: policyPath(sp.Program, sp.Version), Version: sp.Version,
			Effective: sp.EffectiveFrom.UTC().Format(time.RFC3339), Digest: sp.Digest, File: sp.File,
			Decisions: counts[sp.Program][sp.Version], Current: sp.Version == current})
	}
	return rows, nil
}

// parseVersion reads a policy version: "2" or "v2".
func parseVersion(name, s string) (int, error) {
	v, err := strconv.Atoi(strings.TrimPrefix(s, "v"))
	if err != nil || v < 1 {
		return 0, pageError{http.StatusBadRequest, fmt.Sprintf("%s must be a policy version, a positive whole number.", name)}
	}
	return v, nil
}

// storedPolicy reads a stored version; not stored is a 404 page.
func (c *Console) storedPolicy(r *http.Request, program string, version int) (audit.StoredPolicy, error) {
	sp, err := c.st.PolicyVersion(r.Context(), program, version)
	if errors.Is(err, audit.ErrNotFound) {
		return sp, pageError{http.StatusNotFound, fmt.Sprintf("Policy %s v%d is not stored: no decision was made with it.", program, version)}
	}
	return sp, err
}

type sourceLine struct {
	N    int
	Text string
}

type policyData struct {
	Program, File, Effective, FirstUsed string
	Version                             int
	Digest, SourceDigest                string
	DigestOK                            bool
	Decisions                           int64
	Lines                               []sourceLine
	Versions                            []versionRow
	DiffPrev                            string // the diff with the previous stored version; "" for the first
}

// policy shows a stored policy version: its source with line numbers, whether the source still
// has the digest it was stored with, and how many decisions it made.
func (c *Console) policy(w http.ResponseWriter, r *http.Request, s *session) error {
	program := r.PathValue("program")
	version, err := parseVersion("The version", r.PathValue("version"))
	if err != nil {
		return err
	}
	sp, err := c.storedPolicy(r, program, version)
	if err != nil {
		return err
	}
	rows, err := c.versionRows(r, program, version)
	if err != nil {
		return err
	}
	d := policyData{Program: sp.Program, Version: sp.Version, File: sp.File, Effective: sp.EffectiveFrom.UTC().Format(time.RFC3339),
		FirstUsed: sp.FirstUsedAt.UTC().Format(time.RFC3339), Digest: sp.Digest, SourceDigest: rules.Digest(sp.Source), Versions: rows}
	d.DigestOK = d.SourceDigest == sp.Digest
	for i, row := range rows {
		if row.Current {
			d.Decisions = row.Decisions
			if i > 0 {
				d.DiffPrev = diffPath(program, rows[i-1].Version, version)
			}
		}
	}
	for i, l := range splitLines(string(sp.Source)) {
		d.Lines = append(d.Lines, sourceLine{N: i + 1, Text: l})
	}
	c.render(w, http.StatusOK, "policy", s.page(fmt.Sprintf("Policy %s v%d", program, version), d))
	return nil
}

func diffPath(program string, from, to int) string {
	return policiesPath(program) + "/diff?" + url.Values{"from": {strconv.Itoa(from)}, "to": {strconv.Itoa(to)}}.Encode()
}

type diffData struct {
	Program        string
	From, To       int
	FromURL, ToURL string
	Added, Removed int
	Lines          []diffLine
	Versions       []versionRow
}

// policyDiff shows the line diff between two stored versions of a program (?from=1&to=2).
func (c *Console) policyDiff(w http.ResponseWriter, r *http.Request, s *session) error {
	program := r.PathValue("program")
	q := r.URL.Query()
	from, err := parseVersion("from", q.Get("from"))
	if err != nil {
		return err
	}
	to, err := parseVersion("to", q.Get("to"))
	if err != nil {
		return err
	}
	a, err := c.storedPolicy(r, program, from)
	if err != nil {
		return err
	}
	b, err := c.storedPolicy(r, program, to)
	if err != nil {
		return err
	}
	lines, ok := diffLines(splitLines(string(a.Source)), splitLines(string(b.Source)))
	if !ok {
		return pageError{http.StatusUnprocessableEntity, fmt.Sprintf("The two versions are too long to compare here (more than %d line pairs).", maxDiffCells)}
	}
	rows, err := c.versionRows(r, program, 0)
	if err != nil {
		return err
	}
	d := diffData{Program: program, From: from, To: to, FromURL: policyPath(program, from), ToURL: policyPath(program, to), Lines: lines, Versions: rows}
	for _, l := range lines {
		switch l.Op {
		case "ins":
			d.Added++
		case "del":
			d.Removed++
		}
	}
	c.render(w, http.StatusOK, "diff", s.page(fmt.Sprintf("Policy %s: v%d → v%d", program, from, to), d))
	return nil
}

// splitLines splits a source into its lines (a final newline ends the last line, it does not
// start another).
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// diffLine is one line of a diff: Op is "same", "del" (only in the old version) or "ins" (only
// in the new one); Old and New are its line numbers (0: not in that version).
type diffLine struct {
	Op       string
	Old, New int
	Text     string
}

// maxDiffCells bounds the LCS table (old lines × new lines): 4 M int32 cells, 16 MB.
const maxDiffCells = 4 << 20

// diffLines is the line diff of a and b by their longest common subsequence: the lines common to
// both in order, each removed line before the added lines that replace it. ok is false when the
// table would exceed maxDiffCells (after trimming the common head and tail).
func diffLines(a, b []string) (out []diffLine, ok bool) {
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	for i := range head {
		out = append(out, diffLine{Op: "same", Old: i + 1, New: i + 1, Text: a[i]})
	}
	ma, mb := a[head:len(a)-tail], b[head:len(b)-tail]
	n, m := len(ma), len(mb)
	if int64(n+1)*int64(m+1) > maxDiffCells {
		return nil, false
	}
	// lcs[i][j] is the LCS length of ma[i:] and mb[j:].
	lcs := make([]int32, (n+1)*(m+1))
	at := func(i, j int) *int32 { return &lcs[i*(m+1)+j] }
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			switch {
			case ma[i] == mb[j]:
				*at(i, j) = *at(i+1, j+1) + 1
			case *at(i+1, j) >= *at(i, j+1):
				*at(i, j) = *at(i+1, j)
			default:
				*at(i, j) = *at(i, j+1)
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && ma[i] == mb[j]:
			out = append(out, diffLine{Op: "same", Old: head + i + 1, New: head + j + 1, Text: ma[i]})
			i, j = i+1, j+1
		case j == m || (i < n && *at(i+1, j) >= *at(i, j+1)):
			out = append(out, diffLine{Op: "del", Old: head + i + 1, Text: ma[i]})
			i++
		default:
			out = append(out, diffLine{Op: "ins", New: head + j + 1, Text: mb[j]})
			j++
		}
	}
	for k := range tail {
		oi, ni := len(a)-tail+k, len(b)-tail+k
		out = append(out, diffLine{Op: "same", Old: oi + 1, New: ni + 1, Text: a[oi]})
	}
	return out, true
}
