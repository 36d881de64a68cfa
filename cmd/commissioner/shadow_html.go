package main

// The shadow report as one self-contained HTML page: adapters/replayreport lays it out as the
// console's shadow page (one view, one template body), with its CSS inline, inline SVG charts, no
// script and nothing fetched.

import (
	"io"

	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// writeShadowHTML writes the report as a standalone HTML page. The diverging orders are not
// linked (the page is a file): each says which `commissioner explain` to run. The shadow
// versions' sample is read from the policy directory p.Policies when it loads.
func writeShadowHTML(w io.Writer, rep *engine.ShadowReport, f engine.ShadowFilter, p shadowReportParams) error {
	return replayreport.WriteShadowHTML(w, rep, f, replayreport.ShadowOptions{
		MoreOrders: "--orders N lists more",
		Loaded:     loadedShadows(p.Policies),
	})
}

// loadedShadows are the shadow versions of the policy directory dir; none when it does not load
// (the report then says their sample is not known).
func loadedShadows(dir string) []*rules.Policy {
	if dir == "" {
		return nil
	}
	set, err := rules.LoadDir(dir)
	if err != nil {
		return nil
	}
	return set.AllShadows()
}
