package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine/payout"
	"github.com/commissioner/commissioner/rules"
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
	// PolicyMaxBytes refuses a policy file larger than this (serve and reload).
	PolicyMaxBytes int64 `koanf:"policy_max_bytes"`
	// Audit: signed checkpoints (checkpoints.go).
	Audit AuditConfig `koanf:"audit"`
	// Payouts: the account payout runs are paid from (payouts --export; payouts_bank.go).
	Payouts PayoutsConfig `koanf:"payouts"`
}

// StoreConfig is the store's part of the configuration.
type StoreConfig struct {
	DSN string `koanf:"dsn"`
	// PasswordFile holds the database password (its first line), put into the DSN: a password
	// written in --store-dsn shows in the process list. The environment also serves
	// (COMMISSIONER_STORE__DSN), like any key.
	PasswordFile string `koanf:"password_file"`
}

func defaultConfig() Config {
	nats := stream.DefaultConfig()
	nats.DataDir = ""
	return Config{
		DataDir:        "data",
		Policies:       "policies",
		NATS:           nats,
		HTTP:           httpapi.Config{Addr: "127.0.0.1:8080", MaxReplays: httpapi.DefaultMaxReplays},
		WatchPolicies:  true,
		PolicyMaxBytes: rules.DefaultMaxFileBytes,
		Audit:          AuditConfig{CheckpointInterval: time.Second, ReconcileInterval: 10 * time.Minute},
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
	if err := c.withStorePassword(); err != nil {
		return err
	}
	c.NATS = c.NATS.WithDefaults()
	return errors.Join(
		c.NATS.Validate(),
		c.storeConfig().Validate(),
		c.HTTP.Validate(),
	)
}

func (c *Config) storeConfig() store.Config { return store.Config{DSN: c.Store.DSN} }

// withStorePassword puts the password of store.password_file into the DSN (complete calls it).
func (c *Config) withStorePassword() error {
	if c.Store.PasswordFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.Store.PasswordFile)
	if err != nil {
		return fmt.Errorf("store.password_file: %w", err)
	}
	password, _, _ := strings.Cut(string(b), "\n")
	u, err := url.Parse(c.Store.DSN)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.User == nil {
		return errors.New("store.password_file: store.dsn must be postgres://user@host/… (a user, no password) for the password to go into")
	}
	if _, set := u.User.Password(); set {
		return errors.New("store.password_file: store.dsn has a password already; give it in one place")
	}
	u.User = url.UserPassword(u.User.Username(), strings.TrimSpace(password))
	c.Store.DSN = u.String()
	return nil
}

// configFlags are a command's configuration flags: --config, and those of the settings it reads.
type configFlags struct {
	file  string
	flags *pflag.FlagSet
}

// configFlagSet says which configuration flags a command takes: the ones of the settings it
// reads, so that its help lists no flag it would ignore.
type configFlagSet uint8

const (
	flagDataDir  configFlagSet = 1 << iota // --data-dir
	flagStoreDSN                           // --store-dsn
	flagNATSURL                            // --nats-url
	flagPolicies                           // --policies
	flagHTTPAddr                           // --http-addr

	// storeFlags: the store (by default SQLite in the data directory).
	storeFlags = flagDataDir | flagStoreDSN
	// natsFlags: NATS (by default the embedded server on the data directory).
	natsFlags = flagDataDir | flagNATSURL
	// serviceFlags: everything a running service reads.
	serviceFlags = storeFlags | natsFlags | flagPolicies | flagHTTPAddr
)

// configFlagDefs are the configuration flags: name, the config key it sets, usage.
var configFlagDefs = []struct {
	bit         configFlagSet
	name, key   string
	description string
}{
	{flagDataDir, "data-dir", "data_dir", "directory for the embedded defaults (SQLite file, JetStream store)"},
	{flagPolicies, "policies", "policies", "policy directory"},
	{flagNATSURL, "nats-url", "nats.url", "NATS server URL(s); empty: the embedded server"},
	{flagStoreDSN, "store-dsn", "store.dsn", "postgres://… or sqlite:///path; empty: SQLite in the data directory"},
	{flagHTTPAddr, "http-addr", "http.addr", "HTTP address for health, metrics and the audit API; empty string disables"},
}

// addConfigFlags registers --config and the configuration flags of set on cmd.
func addConfigFlags(cmd *cobra.Command, set configFlagSet) *configFlags {
	cf := &configFlags{flags: cmd.Flags()}
	f := cmd.Flags()
	f.StringVar(&cf.file, "config", "", "configuration file (default: commissioner.yaml when present)")
	for _, d := range configFlagDefs {
		if set&d.bit != 0 {
			f.String(d.name, "", d.description)
		}
	}
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
	known := knownKeys()
	if _, err := os.Stat(path); err == nil || explicit {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
			return cfg, fmt.Errorf("reading config %s: %w", path, err)
		}
		if err := checkKeys(path, fk.Keys(), known); err != nil {
			return cfg, err
		}
		if err := k.Merge(fk); err != nil {
			return cfg, fmt.Errorf("reading config %s: %w", path, err)
		}
	}
	var envErr error
	err := k.Load(env.Provider(".", env.Opt{
		Prefix: "COMMISSIONER_",
		TransformFunc: func(name, value string) (string, any) {
			key := strings.ToLower(strings.TrimPrefix(name, "COMMISSIONER_"))
			key = strings.ReplaceAll(key, "__", ".")
			if !known[key] {
				if envKeyIsConfig(key, known) && envErr == nil {
					envErr = unknownKey(name, key, known)
				}
				return "", nil // not configuration: dropped
			}
			if key == "http.tokens" || key == "http.operator_tokens" { // a list: COMMISSIONER_HTTP__TOKENS=token1,token2
				if value == "" {
					return key, []string{} // set and empty: no token
				}
				return key, strings.Split(value, ",")
			}
			return key, value
		},
	}), nil)
	if err == nil {
		err = envErr
	}
	if err != nil {
		return cfg, fmt.Errorf("reading environment: %w", err)
	}
	for _, d := range configFlagDefs {
		if fl := cf.flags.Lookup(d.name); fl != nil && fl.Changed {
			if err := k.Set(d.key, fl.Value.String()); err != nil {
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

// print writes the effective configuration as YAML that can serve as a configuration file as it
// is, with every secret masked ("****": the bearer tokens, NATS token and password, the password
// in a DSN; the paying account's number but its last four characters), and the defaults filled in.
func (c Config) print(w io.Writer) error {
	c.Store.DSN = c.storeConfig().String()
	c.HTTP.Tokens = slices.Repeat([]string{"****"}, len(c.HTTP.Tokens)) // a new slice: the caller's stays whole
	c.HTTP.OperatorTokens = slices.Repeat([]string{"****"}, len(c.HTTP.OperatorTokens))
	if c.NATS.Token != "" {
		c.NATS.Token = "****"
	}
	if c.NATS.Password != "" {
		c.NATS.Password = "****"
	}
	if c.NATS.URL != "" {
		c.NATS.URL = c.NATS.RedactedURL()
	}
	c.Audit.CheckpointKey, c.Audit.CheckpointLog = c.checkpointKeyPath(), c.checkpointLogPath()
	c.Payouts.Debtor.IBAN, c.Payouts.Debtor.Account = payout.Mask(c.Payouts.Debtor.IBAN), payout.Mask(c.Payouts.Debtor.Account)
	out, err := yaml.Parser().Marshal(configMap(reflect.ValueOf(c)))
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// configMap is a configuration struct as nested maps keyed by its koanf tags; durations as text.
func configMap(v reflect.Value) map[string]any {
	out := map[string]any{}
	t := v.Type()
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("koanf")
		if tag == "" || tag == "-" {
			continue
		}
		f := v.Field(i)
		switch x := f.Interface().(type) {
		case time.Duration:
			out[tag] = x.String()
		default:
			if f.Kind() == reflect.Struct {
				out[tag] = configMap(f)
			} else {
				out[tag] = x
			}
		}
	}
	return out
}

func newConfigCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (defaults, file, environment, flags), secrets masked",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, serviceFlags)
	cmd.RunE = func(*cobra.Command, []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return cfg.print(s.out)
	}
	return cmd
}
