package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// Tokens are the configured bearer tokens by role: readers' (http.tokens) and operators'
// (http.operator_tokens), held as SHA-256 digests. The audit API and the console (through cmd)
// check tokens with it, so there is one comparison. Safe for concurrent use.
type Tokens struct {
	all, operators [][sha256.Size]byte
}

// NewTokens holds the readers' and the operators' tokens.
func NewTokens(readers, operators []string) *Tokens {
	t := &Tokens{operators: digests(operators)}
	t.all = append(digests(readers), t.operators...)
	return t
}

// Check reports whether token is one of the tokens, and whether it is an operator's. Every
// digest is compared in constant time, so neither which token matched nor how long it is leaks.
// The empty token never matches.
func (t *Tokens) Check(token string) (ok, operator bool) {
	if t == nil || token == "" {
		return false, false
	}
	got := sha256.Sum256([]byte(token))
	return oneOf(got, t.all), oneOf(got, t.operators)
}

// Bearer checks the request's "Authorization: Bearer TOKEN" as Check does.
func (t *Tokens) Bearer(r *http.Request) (ok, operator bool) {
	scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return false, false
	}
	return t.Check(strings.TrimSpace(token))
}

func oneOf(got [sha256.Size]byte, digests [][sha256.Size]byte) bool {
	match := 0
	for i := range digests {
		match |= subtle.ConstantTimeCompare(got[:], digests[i][:])
	}
	return match == 1
}

func digests(tokens []string) [][sha256.Size]byte {
	out := make([][sha256.Size]byte, len(tokens))
	for i, t := range tokens {
		out[i] = sha256.Sum256([]byte(t))
	}
	return out
}
