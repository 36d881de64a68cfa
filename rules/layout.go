package rules

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
)

// versionFileRE is a policy file's expected name: v<version>.yaml (or .yml).
var versionFileRE = regexp.MustCompile(`^v([0-9]+)\.ya?ml$`)

// LintLayout warns where a policy file is not where its content says it belongs: a file named
// v<N> that holds another version, a program's file in another program's directory, a policy
// with no tests (policy test has nothing to hold it to). The layout is the convention
// policies/<program>/v<version>.yaml: readers find a version by its path.
func LintLayout(p *Policy) Problems {
	var out Problems
	warn := func(format string, args ...any) {
		out = append(out, Problem{File: p.File, Line: 1, Rule: "layout", Code: CodeLayout, Message: fmt.Sprintf(format, args...), Severity: SeverityWarning})
	}
	base := filepath.Base(p.File)
	if m := versionFileRE.FindStringSubmatch(base); m == nil {
		warn("the file name %s is not v%d.yaml: name a version's file after its version", base, p.Version)
	} else if n, _ := strconv.Atoi(m[1]); n != p.Version {
		warn("the file is named %s but holds version %d: rename it v%d.yaml (or fix its version)", base, p.Version, p.Version)
	}
	if dir := filepath.Base(filepath.Dir(p.File)); dir != p.Program && dir != "." && dir != string(filepath.Separator) {
		warn("program %s is in the directory %s/: put it in %s/ (a program's versions live together)", p.Program, dir, p.Program)
	}
	if len(p.Tests) == 0 {
		warn("no tests: policy test has nothing to hold this version to; add examples under tests:")
	}
	return out
}

// IgnoredFiles lists the files below dir that look like policy versions (v<N>…) but are not
// loaded, because their name does not end in .yaml or .yml (v3.yaml.bak, v3.YAML, v3.json):
// a version that silently does not count.
func IgnoredFiles(dir string) (Problems, error) {
	var out Problems
	err := walkPolicyDir(dir, func(path string) {
		if looksLikeVersionRE.MatchString(filepath.Base(path)) && !isPolicyFile(path) {
			out = append(out, Problem{File: path, Line: 1, Rule: "layout", Code: CodeLayout, Severity: SeverityWarning,
				Message: "looks like a policy version but is not loaded: only .yaml and .yml files are"})
		}
	})
	return out, err
}

var looksLikeVersionRE = regexp.MustCompile(`^v[0-9]+\.`)
