package rules

// Shadow versions: a policy file marked `stage: shadow` is a version of its program that is
// decided beside the live one and compared with it, never in force, never pinned, never booked.
// It has its own version number (one numbering with the live versions of its program) and its
// own digest. The loader keeps shadows apart in the Set: InForce and Version never return one,
// Shadows does.

import (
	"bytes"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
)

// StageShadow is the one stage a policy file may name (stage: shadow); a file without the key
// is a live version.
const StageShadow = "shadow"

// IsShadow reports whether the version is a shadow (stage: shadow).
func (p *Policy) IsShadow() bool { return p.Stage == StageShadow }

// InSample reports whether an event whose identity hashes to h (engine.SampleHash) is in the
// shadow's sample: always when the shadow has no sample, else when h falls in the sample's
// share of the 64-bit hash space. The same h always gives the same answer, so a rerun picks the
// same events.
func (p *Policy) InSample(h uint64) bool { return !p.sampled || h < p.sampleBelow }

// SampleBound is InSample's bound: an order whose hash is below it is in the sample; sampled is
// false for a version that decides every order.
func (p *Policy) SampleBound() (below uint64, sampled bool) { return p.sampleBelow, p.sampled }

// decodeStage reads stage and sample: stage may only be "shadow"; sample (a fraction in (0, 1]
// such as 0.1, or a percentage such as "10%") only with it.
func decodeStage(ps *problems, tree map[string]any, p *Policy) {
	if v, ok := scalarOf(ps, tree, "stage", "", false); ok {
		if v.Value != StageShadow {
			ps.at(v, CodeInvalid, "", "stage %q is not allowed: the only stage is %q (a version decided beside the live one and never in force); a live version has no stage key",
				v.Value, StageShadow)
		} else {
			p.Stage = StageShadow
		}
	}
	v, ok := scalarOf(ps, tree, "sample", "", false)
	if !ok {
		return
	}
	if _, staged := tree["stage"]; !staged {
		ps.at(v, CodeInvalid, "", "sample applies only to a shadow version (stage: shadow): a live version decides every order")
		return
	}
	frac, ok := parseSample(v.Value)
	if !ok {
		ps.at(v, CodeInvalid, "", "sample must be a fraction of the events above 0 and at most 1 (0.1) or a percentage (\"10%%\"), got %q", v.Value)
		return
	}
	p.Sample = frac
	p.sampleBelow, p.sampled = sampleThreshold(frac)
}

// parseSample reads a sample share: a decimal fraction in (0, 1] or a percentage in (0%, 100%].
func parseSample(s string) (*apd.Decimal, bool) {
	s = strings.TrimSpace(s)
	pct := strings.HasSuffix(s, "%")
	d, _, err := apd.NewFromString(strings.TrimSpace(strings.TrimSuffix(s, "%")))
	if err != nil || d.Form != apd.Finite || d.Sign() <= 0 {
		return nil, false
	}
	if pct {
		if _, err := apd.BaseContext.WithPrecision(60).Quo(d, d, apd.New(100, 0)); err != nil {
			return nil, false
		}
		d.Reduce(d)
	}
	if d.Cmp(apd.New(1, 0)) > 0 {
		return nil, false
	}
	return d, true
}

// sampleThreshold is the share frac of the 64-bit hash space: floor(frac × 2^64); sampled is
// false when frac is 1 (every event).
func sampleThreshold(frac *apd.Decimal) (below uint64, sampled bool) {
	if frac.Cmp(apd.New(1, 0)) >= 0 {
		return 0, false
	}
	// frac = coeff × 10^exp with exp < 0 (frac < 1): floor(coeff × 2^64 / 10^-exp), exactly.
	num := new(big.Int).Lsh(frac.Coeff.MathBigInt(), 64)
	if frac.Exponent >= 0 {
		num.Mul(num, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(frac.Exponent)), nil))
	} else {
		num.Quo(num, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-frac.Exponent)), nil))
	}
	if !num.IsUint64() {
		return 0, false
	}
	return num.Uint64(), true
}

// Shadows returns a program's shadow versions, by version number; none when it has none.
func (s *Set) Shadows(program string) []*Policy { return s.shadows[program] }

// HasShadows reports whether any program has a shadow version.
func (s *Set) HasShadows() bool { return len(s.shadows) > 0 }

// AllShadows returns every shadow version, by program and version.
func (s *Set) AllShadows() []*Policy {
	var out []*Policy
	for _, prog := range sortedPrograms(s.shadows) {
		out = append(out, s.shadows[prog]...)
	}
	return out
}

// WithShadowsLive returns a set in which the shadow versions are live versions, alongside the
// live ones (each keeps its file, number and digest): what a replay of a shadow file prices —
// "what if these terms had applied" — where a served set keeps them out of force. A set without
// shadows is returned as it is.
func (s *Set) WithShadowsLive() *Set {
	if !s.HasShadows() {
		return s
	}
	var all []*Policy
	for _, p := range s.All() {
		if p.IsShadow() {
			live := *p
			live.Stage = ""
			p = &live
		}
		all = append(all, p)
	}
	out, _ := NewSet(all) // the versions were unique already
	out.warnings = s.warnings
	return out
}

func sortedPrograms(m map[string][]*Policy) []string {
	out := make([]string, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Promote returns the source of the live version a shadow becomes: the shadow's file with
// version set to the given number, effective_from to the given time, and its stage and sample
// keys removed; every other byte (comments, rules, tests) is kept. The top-level keys it edits
// must each be written on one line (key: value), as policy files write them.
func Promote(p *Policy, version int, effectiveFrom time.Time) ([]byte, error) {
	if !p.IsShadow() {
		return nil, fmt.Errorf("%s: %s v%d is not a shadow version (stage: shadow): only a shadow is promoted", p.File, p.Program, p.Version)
	}
	tree, err := parseSource(p.Source)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.File, err)
	}
	lines := bytes.SplitAfter(p.Source, []byte("\n"))
	edit := map[int]string{} // line index → its new text ("" deletes it)
	for key, text := range map[string]string{
		"version":        "version: " + strconv.Itoa(version) + "\n",
		"effective_from": "effective_from: " + effectiveFrom.UTC().Format(time.RFC3339) + "\n",
		"stage":          "",
		"sample":         "",
	} {
		v, ok := tree[key].(Scalar)
		if !ok {
			if key == "sample" {
				continue
			}
			return nil, fmt.Errorf("%s: no top-level %s to rewrite", p.File, key)
		}
		i := v.Line - 1
		if i < 0 || i >= len(lines) || !bytes.HasPrefix(lines[i], []byte(key+":")) {
			return nil, fmt.Errorf("%s:%d: %s is not written as \"%s: value\" on one line at the start of the line; write it so, then promote", p.File, v.Line, key, key)
		}
		edit[i] = text
	}
	var out bytes.Buffer
	for i, l := range lines {
		if text, ok := edit[i]; ok {
			out.WriteString(text)
			continue
		}
		out.Write(l)
	}
	return out.Bytes(), nil
}
