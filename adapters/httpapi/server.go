package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config is the HTTP listener's configuration.
type Config struct {
	Addr string `koanf:"addr"` // host:port; "" disables the server
	// Tokens are the bearer tokens of readers: they read everything the audit API (/v1) and the
	// console (/ui/) show, and run what-ifs and audit verify, which change nothing. None refuses
	// every call. They are secrets: String masks them. From the environment:
	// COMMISSIONER_HTTP__TOKENS=a,b.
	Tokens []string `koanf:"tokens"`
	// OperatorTokens are the bearer tokens of operators: what a reader may, and what changes
	// state — redriving dead letters, closing a payout month in the console.
	// COMMISSIONER_HTTP__OPERATOR_TOKENS=a,b.
	OperatorTokens []string `koanf:"operator_tokens"`
	// MaxReplays is how many POST /v1/replay run at once (0: DefaultMaxReplays); more answer 429.
	MaxReplays int `koanf:"max_replays"`
}

// MinTokenLength is the shortest bearer token Validate accepts.
const MinTokenLength = 16

// Validate checks the address and the tokens.
func (c Config) Validate() error {
	for _, list := range []struct {
		key    string
		tokens []string
	}{{"tokens", c.Tokens}, {"operator_tokens", c.OperatorTokens}} {
		for i, t := range list.tokens {
			if len(strings.TrimSpace(t)) < MinTokenLength || strings.TrimSpace(t) != t {
				return fmt.Errorf("http.%s[%d]: a token must be at least %d characters, without surrounding spaces", list.key, i, MinTokenLength)
			}
		}
	}
	if c.Addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("http.addr %q: %w", c.Addr, err)
	}
	return nil
}

// String describes the configuration with the tokens masked.
func (c Config) String() string {
	return fmt.Sprintf("addr=%q tokens=%d operator_tokens=%d (hidden)", c.Addr, len(c.Tokens), len(c.OperatorTokens))
}

// ReadinessCheck reports whether the service can do its work (broker connected, store reachable,
// policies loaded); a non-nil error makes /readyz answer 503 with the error's text.
type ReadinessCheck func(ctx context.Context) error

// Server is the HTTP server. Build it with New; Run serves until the context ends.
type Server struct {
	cfg      Config
	tokens   *Tokens // the configuration's, for /readyz
	mux      *http.ServeMux
	ready    ReadinessCheck
	listener net.Listener
}

// New returns a server with /healthz, /readyz and /metrics (from gatherer) registered. More
// routes can be added with Handle before Run.
func New(cfg Config, gatherer prometheus.Gatherer, ready ReadinessCheck) *Server {
	s := &Server{cfg: cfg, mux: http.NewServeMux(), ready: ready, tokens: NewTokens(cfg.Tokens, cfg.OperatorTokens)}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return s
}

// Handle registers a handler on the server's mux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the server's root handler (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.mux }

// readyz answers 200 or 503 to anyone (what a load balancer needs); why it is not ready — errors
// that name hosts, addresses and the store — only to a caller with a bearer token of http.tokens
// or http.operator_tokens.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if s.ready != nil {
		if err := s.ready(ctx); err != nil {
			body := map[string]string{"status": "not ready"}
			if ok, _ := s.tokens.Bearer(r); ok {
				body["error"] = err.Error()
			}
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Listen binds the address, so a caller learns a ":0" port before Run.
func (s *Server) Listen() (net.Addr, error) {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", s.cfg.Addr, err)
	}
	s.listener = l
	return l.Addr(), nil
}

// Run serves until ctx is cancelled, then shuts down gracefully (in-flight requests get 5 s).
func (s *Server) Run(ctx context.Context) error {
	if s.listener == nil {
		if _, err := s.Listen(); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.listener) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving http: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down http: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving http: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client may have gone; nothing useful to do with the error
}
