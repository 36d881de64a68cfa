package httpapi

import (
	"net/http/httptest"
	"testing"
)

func TestTokens(t *testing.T) {
	toks := NewTokens([]string{"reader-token-0123456789"}, []string{"operator-token-0123456789"})
	for _, tc := range []struct {
		token        string
		ok, operator bool
	}{
		{"reader-token-0123456789", true, false},
		{"operator-token-0123456789", true, true},
		{"reader-token-012345678", false, false}, // a prefix
		{"reader-token-0123456789x", false, false},
		{"", false, false},
	} {
		if ok, op := toks.Check(tc.token); ok != tc.ok || op != tc.operator {
			t.Errorf("Check(%q) = %v, %v; want %v, %v", tc.token, ok, op, tc.ok, tc.operator)
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "bearer  "+tc.token)
		if ok, op := toks.Bearer(r); ok != tc.ok || op != tc.operator {
			t.Errorf("Bearer(%q) = %v, %v; want %v, %v", tc.token, ok, op, tc.ok, tc.operator)
		}
	}
	for _, h := range []string{"", "Basic reader-token-0123456789", "reader-token-0123456789"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", h)
		if ok, _ := toks.Bearer(r); ok {
			t.Errorf("Authorization %q is accepted", h)
		}
	}
	if ok, _ := NewTokens(nil, nil).Check("reader-token-0123456789"); ok {
		t.Error("no tokens configured, yet one is accepted")
	}
}
