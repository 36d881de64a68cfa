package replayreport

import (
	"embed"
	"html/template"
	"io"

	"github.com/commissioner/commissioner/engine"
)

//go:embed templates/report.html templates/shadow.html templates/page.html
var templateFS embed.FS

//go:embed report.css
var reportCSS []byte

//go:embed page.css
var pageCSS string

// CSS returns the stylesheet of the reports' bodies: a page that includes the "replay-report" or
// the "shadow-report" template serves it beside its own (the console: /ui/assets/replay-report.css). The caller must
// not modify the slice.
func CSS() []byte { return reportCSS }

// ParseTemplates adds the reports' templates to t and returns it: "replay-report" renders a
// *View, "shadow-report" a *ShadowView. The templates it adds are all named "replay-…" or
// "shadow-…", and the function it adds "breakable": t must not define them otherwise.
func ParseTemplates(t *template.Template) (*template.Template, error) {
	return t.Funcs(funcs).ParseFS(templateFS, "templates/report.html", "templates/shadow.html")
}

// standalone is the whole page: a report's body inside a document with its CSS inline
// ("replay-page", "shadow-page").
var standalone = template.Must(ParseTemplates(template.Must(template.New("page.html").ParseFS(templateFS, "templates/page.html"))))

// WriteHTML writes rep as one standalone HTML page titled "Replay of <opts.Candidate>": the
// report's body (New) with the page's and the body's CSS inline, no script, nothing fetched —
// it opens from a file, offline. Orders are linked only when opts.OrderURL is set.
func WriteHTML(w io.Writer, rep *engine.ReplayReport, opts Options) error {
	return standalone.ExecuteTemplate(w, "replay-page", struct {
		Title string
		CSS   template.CSS
		View  *View
	}{"Replay of " + opts.Candidate, template.CSS(pageCSS + string(reportCSS)), New(rep, opts)})
}
