package main

// Strict configuration: a key that names nothing — a misspelt `watch_polices: false`, an
// `http: {adr: …}`, a COMMISSIONER_NATS__URLS — is an error naming the key, where it came from and
// the closest known key, instead of being dropped while `config` exits 0.

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// knownKeys are the configuration's keys (koanf paths of its leaves), from Config's koanf tags.
func knownKeys() map[string]bool {
	out := map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" {
				continue
			}
			key := prefix + tag
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
				walk(f.Type, key+".")
				continue
			}
			out[key] = true
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}

// unknownKey names a key that is not the configuration's, with the closest known one.
func unknownKey(where, key string, known map[string]bool) error {
	best, bestD := "", 1<<30
	for k := range known {
		if d := editDistance(key, k); d < bestD || d == bestD && k < best {
			best, bestD = k, d
		}
	}
	hint := ""
	if bestD <= max(2, len(key)/3) {
		hint = fmt.Sprintf(" (did you mean %q?)", best)
	}
	return fmt.Errorf("%s: unknown configuration key %q%s; `commissioner config` prints every key", where, key, hint)
}

// checkKeys refuses keys (from where) that are not the configuration's.
func checkKeys(where string, keys []string, known map[string]bool) error {
	sort.Strings(keys)
	for _, k := range keys {
		if !known[k] {
			return unknownKey(where, k, known)
		}
	}
	return nil
}

// envKeyIsConfig says whether a COMMISSIONER_ variable (as key) is meant as configuration: it
// names a known key, lies in a known section (nats., store., http., audit.), or is a near miss of
// a key. Other variables with the prefix (the tests' COMMISSIONER_TEST_NATS_URL,
// COMMISSIONER_INTEGRATION) are not configuration and are left alone.
func envKeyIsConfig(key string, known map[string]bool) bool {
	if known[key] {
		return true
	}
	if section, _, ok := strings.Cut(key, "."); ok {
		for k := range known {
			if strings.HasPrefix(k, section+".") {
				return true
			}
		}
	}
	for k := range known {
		if editDistance(key, k) <= 2 {
			return true
		}
	}
	return false
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
