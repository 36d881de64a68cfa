// Package replayreport lays out a replay (engine.ReplayReport) for people, as HTML: the one view
// model and the one template body that both the console's what-if page and
// `commissioner replay --format html` show, so the two cannot drift apart.
//
// The layout leads with the money and folds what did not change:
//
//  1. a sentence saying what was replayed on which orders, the drift alarm and the warnings;
//  2. the commission per currency: before (recorded), after (candidate), the signed difference
//     and the change in % (every currency), then a bar per currency whose commission changed;
//  3. what changed: the counts (qualification each way, decisions and commissions changed,
//     orders not decidable, drift) and the breakdowns by rate rule, buyer market and new vs
//     returning buyer — each with its chart of the rows that changed, those rows, and the
//     unchanged ones folded in a <details> element — then the affiliates with the largest
//     changes;
//  4. the changed orders with what made each difference (linked to the console's decision page,
//     or with the `commissioner explain` command to run), the drifted orders, the orders the
//     candidate could not decide;
//  5. the policy versions compared (candidate and recorded, with their digests).
//
// New builds the View; the template "replay-report" (ParseTemplates adds it to a template set)
// renders it inside any page; WriteHTML writes it as one standalone page with its CSS inline,
// no script and nothing fetched. CSS is the stylesheet of the report's body, which a page that
// includes the body serves beside its own.
//
// The shadow report (engine.ShadowReport: what a shadow version decided beside the live
// decisions of the same events) is laid out the same way, for the console's shadow page and
// `commissioner shadow report --format html`: NewShadow builds its ShadowView, the template
// "shadow-report" renders it, WriteShadowHTML writes the standalone page, with the same CSS. The
// live decisions are its before and the shadow its after; it leads with the money per currency
// and its chart, then the live × shadow qualification matrix and the counts, the breakdowns by
// rate rule, by the first rule whose outcome differs, by market and by buyer (the unchanged rows
// folded), the affiliates with the largest changes, the orders that diverged most with both
// outcomes and the first differing rule (linked to the console's decision page, or with their
// `commissioner explain` command), the orders the shadow could not decide, and last the events
// seen and the versions (shadow: digest, events, orders, sample; live).
//
// Money stays exact: every amount is apd decimal text; float64 only sets a bar's length. The
// charts are inline SVG whose label column is sized from the longest label (an overestimate of
// its rendered width), so a label is never clipped.
//
// The package knows engine's value types and nothing else of the project: it imports no other
// adapter (layering_test.go), so the console and cmd may both use it.
package replayreport
