package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/ami-bridge/ami-bridge/bridge"
)

// EnvPrefix starts every environment variable Load reads.
const EnvPrefix = "AMI_BRIDGE_"

// ServersEnv holds the whole servers list as YAML or JSON. It is the only
// way to set servers from the environment: "__" cannot address list items.
const ServersEnv = EnvPrefix + "SERVERS"

// flagKeys maps each configuration flag to the key it sets.
var flagKeys = map[string]string{
	"nats-url":         "nats.url",
	"nats-listen":      "nats.embedded.listen",
	"store-dir":        "nats.embedded.store_dir",
	"prefix":           "nats.prefix",
	"jetstream":        "jetstream.enabled",
	"state":            "state.enabled",
	"log-level":        "log.level",
	"log-format":       "log.format",
	"shutdown-timeout": "shutdown_timeout",
	"http-listen":      "http.listen",
}

// envSections are the nested sections an AMI_BRIDGE_ variable may
// address, and envScalars the top-level keys. Variables outside them are
// left alone, so a secret can live in AMI_BRIDGE_PBX1_SECRET and be named
// by secret_env.
var (
	envSections = []string{"nats", "jetstream", "ha", "log", "http", "state"}
	envScalars  = []string{"servers", "shutdown_timeout", "memory_limit", "event_buffer", "event_buffer_bytes"}
)

// AddFlags defines the configuration flags on fs: --config and one flag
// per key of flagKeys. A flag overrides the file and the environment only
// when it is given.
func AddFlags(fs *pflag.FlagSet) {
	fs.StringP("config", "c", "", "YAML configuration `file`")
	fs.String("nats-url", "", "NATS server `url`s, comma-separated; empty starts the embedded server (nats.url)")
	fs.String("nats-listen", DefaultListen, "`host:port` of the embedded NATS server; empty: in-process only (nats.embedded.listen)")
	fs.String("store-dir", "", "JetStream storage `dir` of the embedded NATS server (nats.embedded.store_dir)")
	fs.String("prefix", bridge.DefaultPrefix, "subject `prefix` (nats.prefix)")
	fs.Bool("jetstream", false, "publish events into a JetStream stream (jetstream.enabled)")
	fs.Bool("state", false, "keep the live call state in a KV bucket and publish call records (state.enabled)")
	fs.String("log-level", DefaultLogLevel, "log `level`: trace, debug, info, warn, error (log.level)")
	fs.String("log-format", DefaultLogFormat, "log `format`: auto, json, console (log.format)")
	fs.Duration("shutdown-timeout", DefaultShutdownTimeout, "how long shutdown may take (shutdown_timeout)")
	fs.String("http-listen", "", "`host:port` of /metrics, /healthz and /readyz; a host alone takes port 7038; empty: off (http.listen)")
}

// Load reads the file named by --config (if any), then the AMI_BRIDGE_
// variables of environ, then the flags given on fs (already parsed), and
// validates the result. secret_env is looked up in environ too. Every
// problem is reported at once in an *Error; no error text holds a secret.
func Load(fs *pflag.FlagSet, environ []string) (*Config, error) {
	var p problems
	k := koanf.New(".")
	fromEnv := map[string]string{} // key → the variable that set it

	if path, _ := fs.GetString("config"); path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			// The whole file is unusable, so the other checks would only
			// add noise.
			return nil, &Error{Problems: []string{fmt.Sprintf("config file %s: %v", path, err)}}
		}
	}

	if err := k.Load(env.Provider(".", env.Opt{
		Prefix:        EnvPrefix,
		TransformFunc: envTransform(&p, fromEnv),
		EnvironFunc:   func() []string { return environ },
	}), nil); err != nil {
		p.add("environment: %v", err)
	}

	if err := k.Load(posflag.ProviderWithFlag(fs, ".", nil, flagValue(fs)), nil); err != nil {
		p.add("flags: %v", err)
	}

	cfg := Default()
	if n := len(asList(k.Get("servers"))); n > 0 {
		cfg.Servers = make([]Server, n)
		for i := range cfg.Servers {
			cfg.Servers[i] = DefaultServer()
		}
	}
	if err := decode(k, &cfg); err != nil {
		for _, e := range flatten(err) {
			p.add("%s", describeDecodeError(e, fromEnv))
		}
	}

	lookup := lookupIn(environ)
	cfg.check(&p, lookup)
	if err := p.err(secretsOf(&cfg, lookup)); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// envTransform turns AMI_BRIDGE_NATS__URL into nats.url and the servers
// list variable into a list. Problems it finds go to p; the variable that
// set each key goes to fromEnv, for the errors about that key.
func envTransform(p *problems, fromEnv map[string]string) func(k, v string) (string, any) {
	return func(name, value string) (string, any) {
		key := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), "__", "."))
		top, _, nested := strings.Cut(key, ".")
		switch {
		case top == "servers" && nested:
			p.add("%s: environment variables cannot address list items; use secret_env or secret_file, or set %s to the whole list as YAML or JSON", name, ServersEnv)
			return "", nil
		case top == "servers":
			var list []any
			if err := yamlv3.Unmarshal([]byte(value), &list); err != nil {
				// The YAML error may quote the value, which may hold a secret.
				p.add("%s: not a YAML or JSON list of servers", name)
				return "", nil
			}
			return key, list
		case slices.Contains(envSections, top) || slices.Contains(envScalars, top):
			fromEnv[key] = name
			return key, value
		}
		for _, s := range envSections {
			if sub, ok := strings.CutPrefix(top, s+"_"); ok {
				p.add("%s: nested keys take a double underscore, as in %s%s__%s",
					name, EnvPrefix, strings.ToUpper(s), strings.ToUpper(sub))
				return "", nil
			}
		}
		return "", nil // not ours: maybe a secret named by secret_env
	}
}

// flagValue maps a flag to its key, and drops the flags that were not
// given, so their defaults never override the file or the environment.
func flagValue(fs *pflag.FlagSet) func(f *pflag.Flag) (string, any) {
	return func(f *pflag.Flag) (string, any) {
		key, ok := flagKeys[f.Name]
		if !ok || !f.Changed {
			return "", nil
		}
		return key, posflag.FlagVal(fs, f)
	}
}

func decode(k *koanf.Koanf, out *Config) error {
	return k.UnmarshalWithConf("", out, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				durationNeedsUnit,
				mapstructure.StringToTimeDurationHookFunc(),
			),
			WeaklyTypedInput: true, // environment values are all strings
			ErrorUnused:      true, // a misspelt key is an error, not a silent default
			TagName:          "koanf",
		},
	})
}

var durationType = reflect.TypeOf(time.Duration(0))

// durationNeedsUnit refuses a bare number for a duration: YAML's
// "action_timeout: 10" would otherwise mean 10 ns.
func durationNeedsUnit(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if reflect.ValueOf(data).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("a duration needs a unit, as in %vs", data)
	}
	return data, nil
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// flatten returns the leaves of a tree of joined and wrapped errors,
// stopping at mapstructure's per-key errors.
func flatten(err error) []error {
	switch w := err.(type) {
	case *mapstructure.DecodeError:
		return []error{err}
	case interface{ Unwrap() []error }:
		var out []error
		for _, e := range w.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		if inner := w.Unwrap(); inner != nil {
			return flatten(inner)
		}
	}
	return []error{err}
}

// describeDecodeError words a mapstructure error as "key: problem". An
// unknown key set by an environment variable is followed by the
// variable's name, since the file may not hold that key at all.
func describeDecodeError(err error, fromEnv map[string]string) string {
	var de *mapstructure.DecodeError
	if !errors.As(err, &de) {
		return err.Error()
	}
	inner := de.Unwrap()
	if nested := flatten(inner); len(nested) > 1 || nested[0] != inner {
		parts := make([]string, 0, len(nested))
		for _, e := range nested {
			parts = append(parts, describeDecodeError(e, fromEnv))
		}
		return strings.Join(parts, "; ")
	}
	msg := inner.Error()
	if keys, ok := strings.CutPrefix(msg, "has invalid keys: "); ok {
		list := strings.Split(keys, ", ")
		for i, k := range list {
			full := k
			if de.Name() != "" {
				full = de.Name() + "." + k
			}
			if v, ok := fromEnv[full]; ok {
				list[i] = k + " (from " + v + ")"
			}
		}
		msg = "unknown key(s): " + strings.Join(list, ", ")
	}
	if de.Name() == "" {
		return msg
	}
	return de.Name() + ": " + msg
}

func lookupIn(environ []string) func(string) (string, bool) {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// Error is an invalid configuration. It lists every problem found.
type Error struct {
	Problems []string
}

// Error implements error.
func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "invalid configuration: " + e.Problems[0]
	}
	return fmt.Sprintf("invalid configuration, %d problems:\n  - %s",
		len(e.Problems), strings.Join(e.Problems, "\n  - "))
}

type problems struct{ list []string }

func (p *problems) add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// err returns the problems as an *Error with every known secret masked, a
// second line of defence behind the checks that never quote one.
func (p *problems) err(secrets []string) error {
	if len(p.list) == 0 {
		return nil
	}
	out := make([]string, len(p.list))
	for i, s := range p.list {
		out[i] = maskAll(s, secrets)
	}
	return &Error{Problems: out}
}
