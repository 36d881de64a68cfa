package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// URLFile is the file in DataDir where a running embedded server writes its client URL, so
// that another process on the same data directory (`commissioner publish`) can find it.
const URLFile = "nats.url"

// ErrEmbeddedRunning: another embedded server already serves the data directory.
var ErrEmbeddedRunning = errors.New("an embedded NATS server is already running on this data directory")

// Embedded is an in-process nats-server with JetStream storing in Config.DataDir.
type Embedded struct {
	srv     *server.Server
	url     string
	urlFile string
}

// StartEmbedded starts an in-process nats-server with JetStream on cfg.DataDir, listening on
// cfg.EmbeddedListen (a free port by default), waits until it accepts connections, and writes
// its URL to DataDir/nats.url. It refuses to start when the URL in that file still answers.
// The caller must call Shutdown.
func StartEmbedded(ctx context.Context, cfg Config) (*Embedded, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	host, port, err := splitListen(cfg.EmbeddedListen)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded NATS server: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("starting the embedded NATS server: %w", err)
	}
	auth, err := embeddedAuth(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded NATS server: its users: %w", err)
	}
	urlFile := filepath.Join(cfg.DataDir, URLFile)
	if u, err := readURLFile(urlFile); err == nil && reachable(u) {
		return nil, fmt.Errorf("starting the embedded NATS server: %w: %s answers at %s", ErrEmbeddedRunning, urlFile, u)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "commissioner-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		NoSigs:     true,
		NoLog:      true,
		Users:      auth.users(cfg),
	})
	if err != nil {
		return nil, fmt.Errorf("starting the embedded NATS server: %w", err)
	}
	go srv.Start()
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("starting the embedded NATS server on %s: not ready after %v", cfg.EmbeddedListen, wait)
	}
	e := &Embedded{srv: srv, url: srv.ClientURL(), urlFile: urlFile}
	if err := writeFileAtomic(urlFile, []byte(e.url+"\n")); err != nil {
		e.stop()
		return nil, fmt.Errorf("starting the embedded NATS server: writing its URL: %w", err)
	}
	return e, nil
}

// ClientURL is the URL clients connect to, e.g. nats://127.0.0.1:41873.
func (e *Embedded) ClientURL() string { return e.url }

// Shutdown stops the server, waits until it has stopped, and removes DataDir/nats.url.
func (e *Embedded) Shutdown() error {
	e.stop()
	if u, err := readURLFile(e.urlFile); err == nil && u == e.url {
		if err := os.Remove(e.urlFile); err != nil {
			return fmt.Errorf("stopping the embedded NATS server: %w", err)
		}
	}
	return nil
}

func (e *Embedded) stop() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// Connect connects to cfg.URL (comma-separated cluster URLs allowed) or, when it is empty, to
// the embedded server whose URL is in DataDir/nats.url. The connection reconnects forever;
// the caller closes it (Drain or Close).
func Connect(ctx context.Context, cfg Config) (*nats.Conn, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.Name("commissioner"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}
	servers := cfg.URL
	if servers == "" {
		file := filepath.Join(cfg.DataDir, URLFile)
		if servers, err = readURLFile(file); err != nil {
			return nil, fmt.Errorf("connecting to NATS: no URL configured and no embedded server found: %w", err)
		}
		auth, err := ReadEmbeddedAuth(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("connecting to the embedded NATS server: its users: %w", err)
		}
		opts = append(opts, nats.UserInfo(auth.Service.User, auth.Service.Password))
	}
	if cfg.User != "" {
		password, err := cfg.password()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(cfg.User, password))
	}
	if t := cfg.TLS; t.CAFile != "" || t.CertFile != "" {
		if t.CAFile != "" {
			opts = append(opts, nats.RootCAs(t.CAFile))
		}
		if t.CertFile != "" {
			opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
		}
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(dl)))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connecting to NATS: %w", err)
	}
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		var shown []string
		for _, u := range splitURLs(servers) {
			shown = append(shown, redactURL(u))
		}
		return nil, fmt.Errorf("connecting to NATS at %s: %w", strings.Join(shown, ","), err)
	}
	return nc, nil
}

func readURLFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return u, nil
}

// reachable reports whether something accepts TCP connections at the URL's host.
func reachable(u string) bool {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		return false
	}
	c, err := net.DialTimeout("tcp", pu.Host, 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
