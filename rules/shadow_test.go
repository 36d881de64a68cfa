package rules_test

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/rules"
)

// shadowOf is the seed policy as version n, effective from from, with header lines added after
// its effective_from (e.g. "stage: shadow\n").
func shadowOf(t testing.TB, n int, from, header string) string {
	t.Helper()
	s := seedTerms(t)
	s = strings.Replace(s, "version: 1\n", fmt.Sprintf("version: %d\n", n), 1)
	s = strings.Replace(s, "effective_from: 2025-01-01T00:00:00Z\n", "effective_from: "+from+"\n"+header, 1)
	return s
}

// TestStageParsing: stage may be "shadow" only, sample only with it and in (0, 1]; each wrong
// value is a problem at its line, with a code of the documented set.
func TestStageParsing(t *testing.T) {
	for _, c := range []struct {
		name, header string
		shadow       bool
		sample       string // the sample as a decimal; "" none
		problem      string // "line code message part"; "" none
	}{
		{"live", "", false, "", ""},
		{"shadow", "stage: shadow\n", true, "", ""},
		{"sampled", "stage: shadow\nsample: 0.1\n", true, "0.1", ""},
		{"sampled in percent", "stage: shadow\nsample: \"25%\"\n", true, "0.25", ""},
		{"sample of everything", "stage: shadow\nsample: 1\n", true, "1", ""},
		{"another stage", "stage: canary\n", false, "", `6 invalid stage "canary" is not allowed`},
		{"live is not a stage", "stage: live\n", false, "", `6 invalid stage "live" is not allowed`},
		{"stage as a list", "stage: [shadow]\n", false, "", "6 type stage must be a single value"},
		{"sample without a stage", "sample: 0.5\n", false, "", "6 invalid sample applies only to a shadow version"},
		{"sample of nothing", "stage: shadow\nsample: 0\n", true, "", `7 invalid sample must be a fraction`},
		{"sample above one", "stage: shadow\nsample: 1.5\n", true, "", `7 invalid sample must be a fraction`},
		{"sample not a number", "stage: shadow\nsample: some\n", true, "", `7 invalid sample must be a fraction`},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := shadowOf(t, 2, "2025-01-01T00:00:00Z", c.header)
			p, ps := rules.Compile("v2.yaml", []byte(src))
			if c.problem != "" {
				if p != nil {
					t.Fatalf("got a policy, want the problem %s", c.problem)
				}
				if len(ps) != 1 {
					t.Fatalf("got %d problems, want 1: %v", len(ps), ps)
				}
				got := fmt.Sprintf("%d %s %s", ps[0].Line, ps[0].Code, ps[0].Message)
				if !strings.HasPrefix(got, c.problem) {
					t.Errorf("got %q, want it to start %q", got, c.problem)
				}
				if !knownCodes[ps[0].Code] {
					t.Errorf("code %q is not one rules documents", ps[0].Code)
				}
				if !strings.HasPrefix(ps[0].String(), fmt.Sprintf("v2.yaml:%d:", ps[0].Line)) {
					t.Errorf("the problem %q does not start with file:line", ps[0])
				}
				return
			}
			if p == nil {
				t.Fatalf("compiling: %v", ps)
			}
			if p.IsShadow() != c.shadow {
				t.Errorf("IsShadow = %t, want %t", p.IsShadow(), c.shadow)
			}
			got := ""
			if p.Sample != nil {
				got = p.Sample.Text('f')
			}
			if got != c.sample {
				t.Errorf("Sample = %q, want %q", got, c.sample)
			}
		})
	}
}

// TestSampleShare: a sample of f holds about f of uniformly spread hashes, the bounds exactly.
func TestSampleShare(t *testing.T) {
	compile := func(header string) *rules.Policy {
		p, ps := rules.Compile("v2.yaml", []byte(shadowOf(t, 2, "2025-01-01T00:00:00Z", header)))
		if p == nil {
			t.Fatal(ps)
		}
		return p
	}
	all, tenth, half := compile("stage: shadow\n"), compile("stage: shadow\nsample: 0.1\n"), compile("stage: shadow\nsample: 50%\n")
	if !all.InSample(math.MaxUint64) || !all.InSample(0) {
		t.Errorf("a shadow without a sample leaves events out")
	}
	if !half.InSample(1<<63-1) || half.InSample(1<<63) {
		t.Errorf("sample 50%%: the boundary is not 2^63")
	}
	n := 0
	const total = 100000
	for i := uint64(0); i < total; i++ {
		if tenth.InSample(i * (math.MaxUint64 / total)) {
			n++
		}
	}
	if n < total/10-1 || n > total/10+1 {
		t.Errorf("sample 0.1 took %d of %d evenly spread hashes, want %d", n, total, total/10)
	}
}

// TestShadowNeverInForce: a set with a shadow keeps it out of InForce, Version and Versions at
// every time, reaches it through Shadows and All, and numbers it with the live versions.
func TestShadowNeverInForce(t *testing.T) {
	live, ps := rules.Compile("alibaba/v1.yaml", []byte(shadowOf(t, 1, "2025-01-01T00:00:00Z", "")))
	if live == nil {
		t.Fatal(ps)
	}
	// The shadow takes effect later than the live version and has a higher number: as a live
	// version it would be in force from 2025-06.
	shadow, ps := rules.Compile("alibaba/v2.yaml", []byte(shadowOf(t, 2, "2025-06-01T00:00:00Z", "stage: shadow\n")))
	if shadow == nil {
		t.Fatal(ps)
	}
	set, ps := rules.NewSet([]*rules.Policy{shadow, live})
	if set == nil {
		t.Fatal(ps)
	}
	for _, at := range []time.Time{
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2199, 12, 31, 0, 0, 0, 0, time.UTC),
	} {
		p, err := set.InForce("alibaba", at)
		if err != nil || p != live {
			t.Errorf("InForce(%s) = %v, %v; want the live v1", at.Format(time.RFC3339), p, err)
		}
	}
	if _, err := set.Version("alibaba", 2); !errors.Is(err, rules.ErrUnknownVersion) || !strings.Contains(err.Error(), "shadow") {
		t.Errorf("Version(2) = %v, want ErrUnknownVersion saying it is a shadow", err)
	}
	if vs := set.Versions("alibaba"); len(vs) != 1 || vs[0] != live {
		t.Errorf("Versions = %v, want only v1", vs)
	}
	if sh := set.Shadows("alibaba"); len(sh) != 1 || sh[0] != shadow {
		t.Errorf("Shadows = %v, want v2", sh)
	}
	if all := set.All(); len(all) != 2 || all[0] != live || all[1] != shadow {
		t.Errorf("All = %v, want v1 then the shadow v2", all)
	}
	if got := set.Programs(); len(got) != 1 || got[0] != "alibaba" {
		t.Errorf("Programs = %v", got)
	}

	// A program with only a shadow has no version in force.
	only, _ := rules.NewSet([]*rules.Policy{shadow})
	if _, err := only.InForce("alibaba", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, rules.ErrUnknownProgram) {
		t.Errorf("InForce with only a shadow = %v, want ErrUnknownProgram", err)
	}
	// As a candidate (replay of the shadow's file), it is live.
	cand := only.WithShadowsLive()
	if p, err := cand.InForce("alibaba", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil || p.Digest != shadow.Digest || p.Version != 2 {
		t.Errorf("WithShadowsLive: InForce = %v, %v; want the shadow's v2 and digest", p, err)
	}

	// A shadow with a live version's number is a duplicate.
	dup, ps := rules.Compile("alibaba/v1s.yaml", []byte(shadowOf(t, 1, "2025-06-01T00:00:00Z", "stage: shadow\n")))
	if dup == nil {
		t.Fatal(ps)
	}
	if s, ps := rules.NewSet([]*rules.Policy{live, dup}); s != nil || len(ps) != 1 || ps[0].Code != rules.CodeDuplicate {
		t.Errorf("a shadow numbered as a live version: set %v, problems %v; want one duplicate", s, ps)
	}
}

// TestPromote: the promoted source is the shadow's bytes with the new number and date and no
// stage or sample, and compiles as a live version.
func TestPromote(t *testing.T) {
	src := shadowOf(t, 2, "2025-06-01T00:00:00Z", "stage: shadow   # trying 5%\nsample: 0.5\n")
	shadow, ps := rules.Compile("alibaba/v2.yaml", []byte(src))
	if shadow == nil {
		t.Fatal(ps)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	out, err := rules.Promote(shadow, 3, at)
	if err != nil {
		t.Fatal(err)
	}
	want := shadowOf(t, 3, "2026-01-01T00:00:00Z", "")
	if string(out) != want {
		t.Errorf("promoted source differs from the shadow with version 3, 2026-01-01 and no stage:\n%s", out)
	}
	p, ps := rules.Compile(filepath.Join("alibaba", "v3.yaml"), out)
	if p == nil || p.IsShadow() || p.Version != 3 || !p.EffectiveFrom.Equal(at) {
		t.Errorf("the promoted file compiles to %+v (%v)", p, ps)
	}
	if _, err := rules.Promote(p, 4, at); err == nil {
		t.Errorf("promoting a live version: no error")
	}
}
