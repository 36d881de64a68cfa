package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
)

// Config is the service's whole configuration. It is read from, in increasing precedence: the
// defaults, a YAML file (--config, or commissioner.yaml when present), environment variables
// (COMMISSIONER_ + the key in upper case, "__" between levels: COMMISSIONER_STORE__DSN) and flags.
// Each component receives only its own part.
type Config struct {
	// DataDir holds everything the embedded defaults keep: the SQLite file and the JetStream store.
	DataDir string `koanf:"data_dir"`
	// Policies is the policy directory.
	Policies string `koanf:"policies"`
	// NATS: URL "" means the embedded server.
	NATS stream.Config `koanf:"nats"`
	// Store: DSN "" means SQLite at DataDir/commissioner.db.
	Store StoreConfig `koanf:"store"`
	// HTTP serves health, metrics and the audit API.
	HTTP httpapi.Config `koanf:"http"`
	// WatchPolicies reloads the policies when a file in the directory changes (SIGHUP always does).
	WatchPolicies bool `koanf:"watch_policies"`
}

// StoreConfig is the store's part of the configuration.
type StoreConfig struct {
	DSN string `koanf:"dsn"`
}

func defaultConfig() Config {
	nats := stream.DefaultConfig()
	nats.DataDir = ""
	return Config{
		DataDir:       "data",
		Policies:      "policies",
		NATS:          nats,
		HTTP:          httpapi.Config{Addr: "127.0.0.1:8080"},
		WatchPolicies: true,
	}
}

// complete fills what derives from other settings (paths under DataDir) and validates.
func (c *Config) complete() error {
	if c.DataDir == "" {
		return errors.New("config: data_dir must not be empty")
	}
	if c.NATS.DataDir == "" {
		c.NATS.DataDir = filepath.Join(c.DataDir, "nats")
	}
	if c.Store.DSN == "" {
		c.Store.DSN = "sqlite://" + filepath.Join(c.DataDir, "commissioner.db")
	}
	c.NATS = c.NATS.WithDefaults()
	return errors.Join(
		c.NATS.Validate(),
		c.storeConfig().Validate(),
		c.HTTP.Validate(),
	)
}

func (c *Config) storeConfig() store.Config { return store.Config{DSN: c.Store.DSN} }

// configFlags are the flags every service command shares, and the config keys they set.
type configFlags struct {
	file  string
	flags *pflag.FlagSet
}

var flagKeys = map[string]string{
	"data-dir":  "data_dir",
	"policies":  "policies",
	"nats-url":  "nats.url",
	"store-dsn": "store.dsn",
	"http-addr": "http.addr",
}

func addConfigFlags(cmd *cobra.Command) *configFlags {
	cf := &configFlags{flags: cmd.Flags()}
	f := cmd.Flags()
	f.StringVar(&cf.file, "config", "", "configuration file (default: commissioner.yaml when present)")
	f.String("data-dir", "", "directory for the embedded defaults (SQLite file, JetStream store)")
	f.String("policies", "", "policy directory")
	f.String("nats-url", "", "NATS server URL(s); empty: the embedded server")
	f.String("store-dsn", "", "postgres://… or sqlite:///path; empty: SQLite in the data directory")
	f.String("http-addr", "", "HTTP address for health, metrics and the audit API; empty string disables")
	return cf
}

// openStore loads the configuration and opens its store, for the commands that only read or
// write the store (audit, explain). The caller closes it.
func (cf *configFlags) openStore(ctx context.Context) (*store.Store, error) {
	cfg, err := cf.load()
	if err != nil {
		return nil, err
	}
	return store.Open(ctx, cfg.storeConfig())
}

// load reads the configuration: defaults, file, environment, flags.
func (cf *configFlags) load() (Config, error) {
	cfg := defaultConfig()
	k := koanf.New(".")
	path, explicit := cf.file, cf.file != ""
	if !explicit {
		path = "commissioner.yaml"
	}
	if _, err := os.Stat(path); err == nil || explicit {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return cfg, fmt.Errorf("reading config %s: %w", path, err)
		}
	}
	err := k.Load(env.Provider(".", env.Opt{
		Prefix: "COMMISSIONER_",
		TransformFunc: func(key, value string) (string, any) {
			key = strings.ToLower(strings.TrimPrefix(key, "COMMISSIONER_"))
			key = strings.ReplaceAll(key, "__", ".")
			if key == "http.tokens" { // a list: COMMISSIONER_HTTP__TOKENS=token1,token2
				return key, strings.Split(value, ",")
			}
			return key, value
		},
	}), nil)
	if err != nil {
		return cfg, fmt.Errorf("reading environment: %w", err)
	}
	for name, key := range flagKeys {
		if fl := cf.flags.Lookup(name); fl != nil && fl.Changed {
			if err := k.Set(key, fl.Value.String()); err != nil {
				return cfg, err
			}
		}
	}
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := cfg.complete(); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// print writes the effective configuration with secrets masked.
func (c Config) print(w io.Writer) {
	fmt.Fprintf(w, "data_dir: %s\n", c.DataDir)
	fmt.Fprintf(w, "policies: %s\n", c.Policies)
	fmt.Fprintf(w, "watch_policies: %t\n", c.WatchPolicies)
	fmt.Fprintf(w, "nats: %s\n", c.NATS.String())
	fmt.Fprintf(w, "store: dsn=%q\n", c.storeConfig().String())
	fmt.Fprintf(w, "http: %s\n", c.HTTP) // tokens masked
}

func init() { extraCommands = append(extraCommands, newConfigCmd) }

func newConfigCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (defaults, file, environment, flags), secrets masked",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.RunE = func(*cobra.Command, []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		cfg.print(s.out)
		return nil
	}
	return cmd
}
