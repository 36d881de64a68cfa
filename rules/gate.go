package rules

import "os"

// Check loads the policies at path (a directory, or one file) and lints them as they must pass
// before they ship. It returns the set and every problem that does not keep it from compiling —
// the set's warnings, the files a directory's loading ignored, Lint's and LintLayout's findings —
// sorted; the set may decide orders only when none of them is an error (Problems.HasErrors). A
// policy that does not compile is the error (Problems, each with file:line); so is a path that
// cannot be read. It is the one gate of serve, its reloads and `commissioner policy check`
// (engine.CheckPolicies adds the policies' tests).
func Check(path string, opts ...LoadOption) (*Set, Problems, error) {
	set, err := LoadFile(path, opts...)
	if err != nil {
		return nil, nil, err
	}
	problems := append(Problems(nil), set.Warnings()...)
	if info, err := os.Stat(path); err == nil && info.IsDir() {
		ignored, err := IgnoredFiles(path)
		if err != nil {
			return nil, nil, err
		}
		problems = append(problems, ignored...)
	}
	for _, p := range set.All() {
		problems = append(problems, Lint(p)...)
		problems = append(problems, LintLayout(p)...)
	}
	problems.Sort()
	return set, problems, nil
}
