package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

type sampleParams struct {
	N       int
	Seed    uint64
	Program string
	Month   string // YYYY-MM the orders are placed in
	Bad     int    // per mille of malformed or invalid lines
}

func newSampleCmd(s streams) *cobra.Command {
	p := sampleParams{N: 5000, Seed: 1, Program: "alibaba", Month: "2025-10"}
	cmd := &cobra.Command{
		Use:   "sample [--n N] [--seed S] [--month YYYY-MM]",
		Short: "Write realistic sample order events as JSON lines (the same seed gives the same orders)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := bufio.NewWriterSize(s.out, 1<<16)
			if err := writeSample(w, p); err != nil {
				return err
			}
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.IntVar(&p.N, "n", p.N, "how many orders")
	f.Uint64Var(&p.Seed, "seed", p.Seed, "random seed")
	f.StringVar(&p.Program, "program", p.Program, "program of the orders")
	f.StringVar(&p.Month, "month", p.Month, "month the orders are placed in (YYYY-MM)")
	f.IntVar(&p.Bad, "bad-per-mille", 0, "how many lines in a thousand are malformed or invalid")
	return cmd
}

type weighted[T any] struct {
	v T
	w int
}

func pick[T any](r *rand.Rand, xs []weighted[T]) T {
	total := 0
	for _, x := range xs {
		total += x.w
	}
	n := r.IntN(total)
	for _, x := range xs {
		if n -= x.w; n < 0 {
			return x.v
		}
	}
	return xs[len(xs)-1].v
}

var (
	sampleCountries = []weighted[string]{
		{"US", 300}, {"GB", 80}, {"DE", 70}, {"FR", 50}, {"CA", 40}, {"AU", 30}, {"NL", 20}, {"MX", 20},
		{"BR", 40}, {"JP", 40}, {"ES", 30}, {"IT", 30}, {"KR", 25}, {"SA", 20}, {"AE", 20}, {"HK", 15},
		{"TW", 10}, {"SG", 15}, {"PL", 15}, {"SE", 10}, {"ZA", 10}, {"KW", 5}, {"CL", 5}, {"IN", 10},
	}
	sampleCurrency = map[string]string{
		"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR", "IT": "EUR",
		"JP": "JPY", "KW": "KWD", "CA": "CAD", "AU": "AUD", "MX": "MXN", "BR": "BRL", "KR": "KRW",
		"SE": "SEK", "PL": "PLN", "CL": "CLP",
	}
	sampleStatuses = []weighted[string]{{"completed", 850}, {"pending", 70}, {"cancelled", 40}, {"refunded", 40}}
	sampleCats     = []weighted[string]{
		{"electronics", 250}, {"apparel", 200}, {"home_garden", 150}, {"beauty", 100}, {"toys", 80},
		{"machinery", 80}, {"packaging", 60}, {"sports", 60}, {"tobacco", 5}, {"weapons", 4},
		{"counterfeit", 3}, {"hazardous_chemicals", 3}, {"prescription_medicine", 2}, {"live_animals", 1},
	}
	decimalsOf = map[string]int{"JPY": 0, "KRW": 0, "CLP": 0, "KWD": 3}
)

// writeSample writes p.N orders. Amounts are built as integers in minor units, so they are exact.
func writeSample(w io.Writer, p sampleParams) error {
	start, err := time.Parse("2006-01", p.Month)
	if err != nil {
		return usageError{fmt.Errorf("--month %q: want YYYY-MM", p.Month)}
	}
	monthSecs := int64(start.AddDate(0, 1, 0).Sub(start) / time.Second)
	r := rand.New(rand.NewPCG(p.Seed, 0x636f6d6d))
	buf := make([]byte, 0, 1024)
	for i := range p.N {
		buf = buf[:0]
		if p.Bad > 0 && r.IntN(1000) < p.Bad {
			buf = append(buf, badSampleLine(r, i)...)
		} else {
			buf = appendSampleOrder(buf, r, p, i, start, monthSecs)
		}
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

func appendSampleOrder(b []byte, r *rand.Rand, p sampleParams, i int, start time.Time, monthSecs int64) []byte {
	country := pick(r, sampleCountries)
	cur, ok := sampleCurrency[country]
	if !ok {
		cur = "USD"
	}
	dec := 2
	if d, ok := decimalsOf[cur]; ok {
		dec = d
	}
	placed := start.Add(time.Duration(r.Int64N(monthSecs)) * time.Second)
	status := pick(r, sampleStatuses)
	traffic := country
	if r.IntN(100) < 12 {
		traffic = pick(r, sampleCountries)
	}
	aff := r.IntN(40)
	if r.IntN(4) == 0 {
		aff = r.IntN(400)
	}
	b = append(b, `{"order_id":"`...)
	b = append(b, p.Program...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(i+1), 10)
	b = append(b, `","program":"`...)
	b = append(b, p.Program...)
	b = fmt.Appendf(b, `","affiliate_id":"aff-%04d","status":"%s","placed_at":"%s"`, aff, status, placed.Format(time.RFC3339))
	if status == "completed" || status == "refunded" {
		b = fmt.Appendf(b, `,"completed_at":"%s"`, placed.Add(time.Duration(1+r.IntN(96))*time.Hour).Format(time.RFC3339))
	}
	if r.IntN(100) < 93 {
		// Mostly inside the 30-day window, some just past it.
		click := placed.Add(-time.Duration(r.Int64N(34*24*3600)) * time.Second)
		b = fmt.Appendf(b, `,"click_at":"%s"`, click.Format(time.RFC3339))
	}
	b = fmt.Appendf(b, `,"buyer":{"id":"buyer-%06d","country":"%s","new":%t},"traffic_country":"%s","currency":"%s"`,
		r.IntN(200000), country, r.IntN(100) < 35, traffic, cur)
	nItems := 1 + r.IntN(4)
	var total int64
	items := make([]byte, 0, 512)
	for j := range nItems {
		qty := int64(1 + r.IntN(3))
		unit := int64(500 + r.IntN(40000)) // minor units at 2 decimals
		unit = scaleMinor(unit, dec)
		amt := unit * qty
		total += amt
		if j > 0 {
			items = append(items, ',')
		}
		items = fmt.Appendf(items, `{"sku":"sku-%05d","category":"%s","amount":"%s","quantity":%d}`,
			r.IntN(50000), pick(r, sampleCats), minorText(amt, dec), qty)
	}
	b = fmt.Appendf(b, `,"amount":"%s"`, minorText(total, dec))
	switch {
	case status == "refunded":
		b = fmt.Appendf(b, `,"refunded_amount":"%s"`, minorText(total, dec))
	case status == "completed" && r.IntN(100) < 2:
		b = fmt.Appendf(b, `,"refunded_amount":"%s"`, minorText(total/3, dec))
	}
	b = append(b, `,"items":[`...)
	b = append(b, items...)
	return append(b, "]}"...)
}

// scaleMinor converts an amount in cents to a currency with dec decimals (JPY: ×1, KWD: ×10).
func scaleMinor(cents int64, dec int) int64 {
	switch dec {
	case 0:
		return cents // 500..40500 yen
	case 3:
		return cents / 3
	}
	return cents
}

func minorText(v int64, dec int) string {
	s := strconv.FormatInt(v, 10)
	if dec == 0 {
		return s
	}
	for len(s) <= dec {
		s = "0" + s
	}
	return s[:len(s)-dec] + "." + s[len(s)-dec:]
}

func badSampleLine(r *rand.Rand, i int) string {
	switch r.IntN(5) {
	case 0:
		return `{"order_id":"bad-` + strconv.Itoa(i) + `","program":"alibaba"`
	case 1:
		return `{"order_id":"bad-` + strconv.Itoa(i) + `","program":"alibaba","affiliate_id":"a","status":"shipped","placed_at":"2025-10-01T00:00:00Z","buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"1.00"}`
	case 2:
		return `{"order_id":"bad-` + strconv.Itoa(i) + `","program":"alibaba","affiliate_id":"a","status":"completed","placed_at":"2025-10-01T00:00:00Z","buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"-5"}`
	case 3:
		return `{"order_id":"bad-` + strconv.Itoa(i) + `","program":"nosuch","affiliate_id":"a","status":"completed","placed_at":"2025-10-01T00:00:00Z","buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"5"}`
	}
	return `not json at all ` + strconv.Itoa(i)
}
