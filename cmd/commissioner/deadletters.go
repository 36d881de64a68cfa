package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
)

type deadLettersParams struct {
	Kind, Program, OrderID string
	From, To               string // RFC 3339 or YYYY-MM-DD
	Format                 string // table | json | csv
	Limit                  int
}

// newDeadLettersCmd lists and shows the events that got no decision, with their reasons.
func newDeadLettersCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dead-letters",
		Short: "List, show and redrive the events that got no decision, with their reasons",
		Args:  cobra.NoArgs,
	}
	p := deadLettersParams{Format: "table", Limit: 1000}
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters: id, when, kind, program, order, reason",
		Long: `Lists the stored dead letters, oldest first: malformed events, orders of unknown programs, orders
with no policy in force, and decodable orders a rule failed on. Filter by --kind (invalid,
unknown_program, no_policy, runtime, …), --program, --order and the time they were received
(--from inclusive, --to exclusive; RFC 3339 or YYYY-MM-DD, UTC).`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(list, storeFlags)
	f := list.Flags()
	f.StringVar(&p.Kind, "kind", "", "only this kind")
	f.StringVar(&p.Program, "program", "", "only this program")
	f.StringVar(&p.OrderID, "order", "", "only this order")
	f.StringVar(&p.From, "from", "", "received at or after (RFC 3339 or YYYY-MM-DD)")
	f.StringVar(&p.To, "to", "", "received before (RFC 3339 or YYYY-MM-DD)")
	f.StringVar(&p.Format, "format", p.Format, "table, json or csv")
	f.IntVar(&p.Limit, "limit", p.Limit, "at most this many")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		st, err := cf.openStore(cmd.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		return runDeadLettersList(cmd.Context(), st, p, s.out)
	}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one dead letter whole: reason, kind, stream position, its place in the chain and the raw event",
		Args:  cobra.ExactArgs(1),
	}
	scf := addConfigFlags(show, storeFlags)
	showJSON := show.Flags().Bool("json", false, "JSON for machines")
	show.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil || id < 1 {
			return usageError{fmt.Errorf("dead letter id %q is not a positive whole number", args[0])}
		}
		st, err := scf.openStore(cmd.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		d, err := st.DeadLetter(cmd.Context(), id)
		if err != nil {
			return err
		}
		if *showJSON {
			return writeJSONDoc(s.out, httpapi.NewDeadLetterView(d, true))
		}
		writeDeadLetter(s.out, d)
		return nil
	}
	cmd.AddCommand(list, show, newDeadLettersRedriveCmd(s))
	return cmd
}

// parseWhen reads --from/--to: RFC 3339, or a UTC date (httpapi.ParseTimeOrDate).
func parseWhen(flag, v string) (time.Time, error) {
	t, err := httpapi.ParseTimeOrDate(v)
	if err != nil {
		return t, usageError{fmt.Errorf("--%s %q: %w", flag, v, err)}
	}
	return t, nil
}

func runDeadLettersList(ctx context.Context, st *store.Store, p deadLettersParams, out io.Writer) error {
	from, err := parseWhen("from", p.From)
	if err != nil {
		return err
	}
	to, err := parseWhen("to", p.To)
	if err != nil {
		return err
	}
	ds, err := st.DeadLetters(ctx, store.DeadLetterFilter{Kind: p.Kind, Program: p.Program, OrderID: p.OrderID, From: from, To: to, Limit: p.Limit})
	if err != nil {
		return err
	}
	switch p.Format {
	case "json":
		docs := make([]httpapi.DeadLetterView, len(ds))
		for i, d := range ds {
			docs[i] = httpapi.NewDeadLetterView(d, false)
		}
		return writeJSONDoc(out, map[string]any{"dead_letters": docs})
	case "csv":
		w := csv.NewWriter(out)
		w.Write([]string{"id", "received_at", "kind", "program", "order_id", "affiliate_id", "event_id", "stream_seq", "reason"})
		for _, d := range ds {
			w.Write([]string{strconv.FormatInt(d.ID, 10), d.ReceivedAt.Format(time.RFC3339), d.Kind, d.Program, d.OrderID, d.AffiliateID,
				d.EventID, strconv.FormatUint(d.StreamSeq, 10), d.Reason})
		}
		w.Flush()
		return w.Error()
	case "table":
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRECEIVED\tKIND\tPROGRAM\tORDER\tREASON")
		for _, d := range ds {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.ReceivedAt.Format(time.RFC3339), d.Kind, orDash(d.Program), orDash(d.OrderID), clip(d.Reason, 100))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(out, "%d dead letters\n", len(ds))
		return nil
	}
	return usageError{errors.New("--format: table, json or csv")}
}

// writeDeadLetter prints one dead letter for a reader.
func writeDeadLetter(w io.Writer, d store.DeadLetter) {
	field := func(name, format string, args ...any) {
		fmt.Fprintf(w, "  %-15s %s\n", name, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(w, "== dead letter %d\n", d.ID)
	field("kind", "%s", d.Kind)
	field("reason", "%s", d.Reason)
	field("event", "%s (stream seq %d, subject %s)", d.EventID, d.StreamSeq, d.Subject)
	if d.Program != "" {
		field("order", "%s of %s (affiliate %s)", orDash(d.OrderID), d.Program, orDash(d.AffiliateID))
	}
	if d.PlacedAt != nil {
		field("placed at", "%s", d.PlacedAt.Format(time.RFC3339))
	}
	field("received at", "%s", d.ReceivedAt.Format(time.RFC3339))
	field("chain", "partition %d batch %d leaf %d", d.Partition, d.BatchSeq, d.Leaf)
	field("raw event", "%s", clip(string(d.Raw), 4000))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clip shortens s to n runes, saying so.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + fmt.Sprintf("… (%d more characters)", len(r)-n)
}
