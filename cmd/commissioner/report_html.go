package main

// The replay report as one self-contained HTML page: adapters/replayreport lays it out exactly as
// the console's what-if page (the money first, then what changed, the unchanged folded), with
// its CSS inline, inline SVG charts, no script and nothing fetched.

import (
	"io"

	"github.com/commissioner/commissioner/adapters/replayreport"
)

// writeReportHTML writes the replay report as a standalone HTML page. The changed orders are not
// linked (the page is a file): it says which `commissioner explain` to run.
func writeReportHTML(w io.Writer, run *replayRun) error {
	rep := *run.Report
	rep.Changes = run.listedChanges()
	return replayreport.WriteHTML(w, &rep, replayreport.Options{
		Candidate:   run.Candidate,
		Range:       "orders " + rangeLabel(run),
		MoreChanges: "--changes N or --format csv lists more",
		Warnings:    run.Warnings,
	})
}
