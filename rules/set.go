package rules

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Set is a loaded, compiled set of policy versions for one or more programs. It is immutable and
// safe for concurrent use; a reload builds a new Set and swaps it whole.
type Set struct {
	programs map[string][]*Policy // the live versions, each sorted by (EffectiveFrom, Version)
	// shadows are the shadow versions (stage: shadow), each program's by version: never in
	// force (InForce, Version and Versions never return one), reached through Shadows.
	shadows  map[string][]*Policy
	warnings Problems
}

// NewSet builds a set from compiled policies, checking that no program has two files with one
// version number (live and shadow versions of a program share one numbering). Shadow versions
// are kept apart from the live ones (Shadows).
func NewSet(policies []*Policy) (*Set, Problems) {
	s := &Set{programs: map[string][]*Policy{}, shadows: map[string][]*Policy{}}
	var ps Problems
	byVersion := map[string]*Policy{}
	for _, p := range policies {
		key := fmt.Sprintf("%s\x00%d", p.Program, p.Version)
		if prev, dup := byVersion[key]; dup {
			ps = append(ps, Problem{File: p.File, Line: 1, Code: CodeDuplicate, Message: fmt.Sprintf("program %s version %d is defined twice: here and in %s (give each file its own version)", p.Program, p.Version, prev.File)})
			continue
		}
		byVersion[key] = p
		if p.IsShadow() {
			s.shadows[p.Program] = append(s.shadows[p.Program], p)
			continue
		}
		s.programs[p.Program] = append(s.programs[p.Program], p)
	}
	for _, vs := range s.shadows {
		sort.Slice(vs, func(i, j int) bool { return vs[i].Version < vs[j].Version })
	}
	for _, vs := range s.programs {
		sort.Slice(vs, func(i, j int) bool {
			if !vs[i].EffectiveFrom.Equal(vs[j].EffectiveFrom) {
				return vs[i].EffectiveFrom.Before(vs[j].EffectiveFrom)
			}
			return vs[i].Version < vs[j].Version
		})
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return s, nil
}

// DefaultMaxFileBytes is the largest policy file loaded unless MaxFileBytes says otherwise: a
// program's terms are a few kilobytes; a file of megabytes is a mistake or an attack (a 50 MB
// file took serve from 50 to 633 MB, and its source would be stored with every version).
const DefaultMaxFileBytes = 1 << 20

// LoadOption changes how policy files are loaded.
type LoadOption func(*loadOptions)

type loadOptions struct{ maxFileBytes int64 }

// MaxFileBytes refuses policy files larger than n bytes (n <= 0: DefaultMaxFileBytes).
func MaxFileBytes(n int64) LoadOption { return func(o *loadOptions) { o.maxFileBytes = n } }

func loadOptionsOf(opts []LoadOption) loadOptions {
	o := loadOptions{}
	for _, f := range opts {
		f(&o)
	}
	if o.maxFileBytes <= 0 {
		o.maxFileBytes = DefaultMaxFileBytes
	}
	return o
}

// readPolicyFile reads a policy file, refusing one over the limit before reading it.
func readPolicyFile(path string, o loadOptions) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if info.Size() > o.maxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes, over the limit of %d for a policy file (policy_max_bytes)", path, info.Size(), o.maxFileBytes)
	}
	src, err := io.ReadAll(io.LimitReader(f, o.maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(src)) > o.maxFileBytes { // it grew while read
		return nil, fmt.Errorf("%s: over the limit of %d bytes for a policy file (policy_max_bytes)", path, o.maxFileBytes)
	}
	return src, nil
}

// LoadDir compiles every policy file (*.yaml, *.yml) below dir and builds a set. Directories
// below dir named "examples" (example programs, not in service) or starting with "." are skipped;
// pointing dir at an examples directory loads it. It reports every
// problem of every file at once; the set is nil when any is an error. Warnings come back with a
// non-nil set (Set.Warnings).
func LoadDir(dir string, opts ...LoadOption) (*Set, error) {
	o := loadOptionsOf(opts)
	files, err := policyFiles(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("loading policies: no policy files (*.yaml) below %s", dir)
	}
	var all Problems
	var compiled []*Policy
	for _, f := range files {
		src, err := readPolicyFile(f, o)
		if err != nil {
			return nil, fmt.Errorf("loading policies: %w", err)
		}
		p, ps := Compile(f, src)
		all = append(all, ps...)
		if p != nil {
			compiled = append(compiled, p)
		}
	}
	if all.HasErrors() {
		return nil, all
	}
	s, ps := NewSet(compiled)
	if ps != nil {
		return nil, append(all, ps...)
	}
	s.warnings = all
	return s, nil
}

// LoadFile compiles one policy file into a set of its own (a candidate policy for replay).
func LoadFile(path string, opts ...LoadOption) (*Set, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("loading policy: %w", err)
	}
	if info.IsDir() {
		return LoadDir(path, opts...)
	}
	src, err := readPolicyFile(path, loadOptionsOf(opts))
	if err != nil {
		return nil, fmt.Errorf("loading policy: %w", err)
	}
	p, ps := Compile(path, src)
	if p == nil {
		return nil, ps
	}
	s, dup := NewSet([]*Policy{p})
	if dup != nil {
		return nil, dup
	}
	s.warnings = ps
	return s, nil
}

func policyFiles(dir string) ([]string, error) {
	var files []string
	err := walkPolicyDir(dir, func(path string) {
		if isPolicyFile(path) {
			files = append(files, path)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("loading policies: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// isPolicyFile says whether a file is loaded as a policy: its name ends in .yaml or .yml.
func isPolicyFile(path string) bool {
	return strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")
}

// walkPolicyDir calls fn with every file below dir that is in service: directories named
// "examples" (example programs) or starting with "." are skipped. A symlinked policy directory
// (a deployment's current -> releases/N) is followed; paths are named as the caller named dir.
func walkPolicyDir(dir string, fn func(path string)) error {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if (strings.HasPrefix(d.Name(), ".") || d.Name() == "examples") && path != root {
				return filepath.SkipDir // hidden, or example programs: load them with dir = …/examples
			}
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		fn(filepath.Join(dir, rel))
		return nil
	})
}

// Warnings returns the problems that did not stop the set from loading.
func (s *Set) Warnings() Problems { return s.warnings }

// Programs returns the names of the programs with a live version, sorted.
func (s *Set) Programs() []string {
	out := make([]string, 0, len(s.programs))
	for p := range s.programs {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Versions returns a program's live versions in effective order (never a shadow).
func (s *Set) Versions(program string) []*Policy { return s.programs[program] }

// All returns every policy of every program, live and shadow: by program, each program's live
// versions in effective order, then its shadows by version. Checks, tests and the store's
// checks of version numbers and digests go through every file.
func (s *Set) All() []*Policy {
	var out []*Policy
	names := s.Programs()
	for p := range s.shadows {
		if _, live := s.programs[p]; !live {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	for _, p := range names {
		out = append(out, s.programs[p]...)
		out = append(out, s.shadows[p]...)
	}
	return out
}

// InForce returns the live version in force for a program at time at: the one with the latest
// effective_from at or before at (the highest version number on a tie). A shadow version is
// never in force.
func (s *Set) InForce(program string, at time.Time) (*Policy, error) {
	vs, ok := s.programs[program]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownProgram, program)
	}
	i := sort.Search(len(vs), func(i int) bool { return vs[i].EffectiveFrom.After(at) })
	if i == 0 {
		return nil, fmt.Errorf("%w: program %s at %s (the first version starts %s)", ErrNoPolicyInForce, program, at.UTC().Format(time.RFC3339), vs[0].EffectiveFrom.Format(time.RFC3339))
	}
	return vs[i-1], nil
}

// Version returns a program's live version n (a pinned order's terms, --version); a shadow
// version n is not one (ErrUnknownVersion, saying so).
func (s *Set) Version(program string, n int) (*Policy, error) {
	vs, ok := s.programs[program]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownProgram, program)
	}
	for _, p := range vs {
		if p.Version == n {
			return p, nil
		}
	}
	for _, p := range s.shadows[program] {
		if p.Version == n {
			return nil, fmt.Errorf("%w: program %s version %d is a shadow version (%s), never in force", ErrUnknownVersion, program, n, p.File)
		}
	}
	return nil, fmt.Errorf("%w: program %s has no version %d", ErrUnknownVersion, program, n)
}
