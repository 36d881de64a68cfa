package replayreport

import (
	"html/template"
	"strings"
	"unicode/utf8"
)

// breakableRun is the longest run of non-space characters shown as it is: a longer one (a long
// rule id, affiliate id, file name…) gets line-break opportunities, so its table column can
// narrow to fit the page and the text wraps instead of overflowing it.
const breakableRun = 20

// breakable is s as HTML text (escaped) with a line-break opportunity (<wbr>) after each _ - . /
// : of a run of more than breakableRun non-space characters, and every breakableRun characters
// of a part with none. Shorter runs are kept whole: one with a hyphen, where a browser would
// break a squeezed column ("alibaba-" / "40"), in a <span class="nobr">.
func breakable(s string) template.HTML {
	var b strings.Builder
	for i, word := range strings.Split(s, " ") {
		if i > 0 {
			b.WriteByte(' ')
		}
		if utf8.RuneCountInString(word) <= breakableRun {
			if strings.Contains(word, "-") {
				b.WriteString(`<span class="nobr">` + template.HTMLEscapeString(word) + `</span>`)
			} else {
				b.WriteString(template.HTMLEscapeString(word))
			}
			continue
		}
		part := 0 // runes since the last opportunity
		for _, r := range word {
			if part == breakableRun {
				b.WriteString("<wbr>")
				part = 0
			}
			b.WriteString(template.HTMLEscapeString(string(r)))
			part++
			if strings.ContainsRune("_-./:", r) {
				b.WriteString("<wbr>")
				part = 0
			}
		}
	}
	return template.HTML(b.String())
}

// funcs are the functions the report's templates call.
var funcs = template.FuncMap{"breakable": breakable}
