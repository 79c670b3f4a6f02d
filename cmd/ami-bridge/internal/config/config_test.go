package config

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge"
)

// load writes yaml to a file (when not empty) and loads it with the given
// environment and flags.
func load(t *testing.T, yaml string, environ []string, flags ...string) (*Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	if yaml != "" {
		flags = append([]string{"--config", writeFile(t, "config.yaml", yaml)}, flags...)
	}
	if err := fs.Parse(flags); err != nil {
		t.Fatalf("flags %q: %v", flags, err)
	}
	return Load(fs, environ)
}

func mustLoad(t *testing.T, yaml string, environ []string, flags ...string) *Config {
	t.Helper()
	cfg, err := load(t, yaml, environ, flags...)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

// problemsOf returns the problems of an *Error, failing the test for any
// other outcome.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got error %v (%T), want *Error", err, err)
	}
	return ce.Problems
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const onePBX = `
servers:
  - name: pbx1
    url: tcp://admin:s3cret@127.0.0.1:5038
`

func TestLoad_Defaults(t *testing.T) {
	cfg := mustLoad(t, onePBX, nil)

	if cfg.NATS.URL != "" || cfg.NATS.Embedded.Listen != "127.0.0.1:4222" || cfg.NATS.Embedded.StoreDir != "" || cfg.NATS.Prefix != "ami" {
		t.Errorf("nats = %+v", cfg.NATS)
	}
	wantJS := JetStream{Enabled: false, Stream: "AMI_EVENTS", MaxAge: 24 * time.Hour, Duplicates: 2 * time.Minute, MaxPending: 4096, Replicas: 1}
	if cfg.JetStream != wantJS {
		t.Errorf("jetstream = %+v, want %+v", cfg.JetStream, wantJS)
	}
	if cfg.Log != (Log{Level: "info", Format: "auto"}) {
		t.Errorf("log = %+v", cfg.Log)
	}
	if cfg.ShutdownTimeout != 15*time.Second {
		t.Errorf("shutdown_timeout = %s", cfg.ShutdownTimeout)
	}
	if cfg.EventBuffer != 65536 || cfg.EventBufferBytes != 32<<20 {
		t.Errorf("event_buffer = %d, event_buffer_bytes = %d; want 65536, 32 MiB", cfg.EventBuffer, cfg.EventBufferBytes)
	}
	if cfg.MemoryLimit != "auto" || cfg.NATS.Embedded.MaxPending != 8<<20 {
		t.Errorf("memory_limit = %q, nats.embedded.max_pending = %d; want auto, 8 MiB", cfg.MemoryLimit, cfg.NATS.Embedded.MaxPending)
	}
	s := cfg.Servers[0]
	if s.Auth != "plain" || s.ActionTimeout != 10*time.Second || s.MaxActionTimeout != 5*time.Minute ||
		s.PingInterval != 30*time.Second || s.Reconnect != (Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}) {
		t.Errorf("server defaults = %+v", s)
	}
	if s.ClientTLS != nil {
		t.Errorf("ClientTLS = %v for a tcp:// url without tls keys, want nil", s.ClientTLS)
	}
}

func TestLoad_ServerKeyWrittenAsZeroStaysZero(t *testing.T) {
	cfg := mustLoad(t, onePBX+"    ping_interval: 0s\n", nil)
	if got := cfg.Servers[0].PingInterval; got != 0 {
		t.Errorf("ping_interval = %s, want 0 (keepalive off)", got)
	}
}

func TestLoad_LayersOverrideInOrder(t *testing.T) {
	file := onePBX + `
nats:
  url: nats://file:4222
  prefix: fileprefix
log:
  level: debug
  format: json
`
	tests := []struct {
		name               string
		environ            []string
		flags              []string
		url, prefix, level string
		format             string
	}{
		{
			name: "file only",
			url:  "nats://file:4222", prefix: "fileprefix", level: "debug", format: "json",
		},
		{
			name:    "env over file",
			environ: []string{"AMI_BRIDGE_NATS__URL=nats://env:4222", "AMI_BRIDGE_LOG__LEVEL=warn"},
			url:     "nats://env:4222", prefix: "fileprefix", level: "warn", format: "json",
		},
		{
			name:    "flags over env",
			environ: []string{"AMI_BRIDGE_NATS__URL=nats://env:4222", "AMI_BRIDGE_LOG__LEVEL=warn"},
			flags:   []string{"--nats-url", "nats://flag:4222", "--prefix", "flagprefix"},
			url:     "nats://flag:4222", prefix: "flagprefix", level: "warn", format: "json",
		},
		{
			name:  "flag set to its default value still overrides",
			flags: []string{"--log-format", "auto", "--log-level", "info"},
			url:   "nats://file:4222", prefix: "fileprefix", level: "info", format: "auto",
		},
		{
			name:    "empty env value overrides: embedded NATS",
			environ: []string{"AMI_BRIDGE_NATS__URL="},
			url:     "", prefix: "fileprefix", level: "debug", format: "json",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, file, tt.environ, tt.flags...)
			got := []string{string(cfg.NATS.URL), cfg.NATS.Prefix, cfg.Log.Level, cfg.Log.Format}
			want := []string{tt.url, tt.prefix, tt.level, tt.format}
			if !slices.Equal(got, want) {
				t.Errorf("url, prefix, level, format = %q, want %q", got, want)
			}
		})
	}
}

func TestLoad_EveryFlagSetsItsKey(t *testing.T) {
	cfg := mustLoad(t, onePBX, nil,
		"--nats-url", "nats://x:4222", "--nats-listen", "127.0.0.1:0", "--store-dir", "/var/lib/ami",
		"--prefix", "pbx", "--jetstream", "--log-level", "trace", "--log-format", "console",
		"--shutdown-timeout", "3s")
	got := fmt.Sprint(cfg.NATS.URL, cfg.NATS.Embedded.Listen, cfg.NATS.Embedded.StoreDir, cfg.NATS.Prefix,
		cfg.JetStream.Enabled, cfg.Log.Level, cfg.Log.Format, cfg.ShutdownTimeout)
	want := fmt.Sprint("nats://x:4222", "127.0.0.1:0", "/var/lib/ami", "pbx", true, "trace", "console", 3*time.Second)
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestLoad_EnvNestsWithDoubleUnderscore(t *testing.T) {
	cfg := mustLoad(t, onePBX, []string{
		"AMI_BRIDGE_NATS__EMBEDDED__LISTEN=",
		"AMI_BRIDGE_NATS__EMBEDDED__STORE_DIR=/data",
		"AMI_BRIDGE_JETSTREAM__ENABLED=true",
		"AMI_BRIDGE_JETSTREAM__MAX_AGE=1h",
		"AMI_BRIDGE_JETSTREAM__MAX_PENDING=16",
		"AMI_BRIDGE_SHUTDOWN_TIMEOUT=3s",
		"AMI_BRIDGE_PBX1_SECRET=not-a-key", // a secret_env variable, not config
		"HOME=/root",
	})
	if cfg.NATS.Embedded.Listen != "" || cfg.NATS.Embedded.StoreDir != "/data" {
		t.Errorf("embedded = %+v", cfg.NATS.Embedded)
	}
	if !cfg.JetStream.Enabled || cfg.JetStream.MaxAge != time.Hour || cfg.JetStream.MaxPending != 16 {
		t.Errorf("jetstream = %+v", cfg.JetStream)
	}
	if cfg.ShutdownTimeout != 3*time.Second {
		t.Errorf("shutdown_timeout = %s", cfg.ShutdownTimeout)
	}
}

func TestLoad_UnknownKeyFromTheEnvironmentNamesTheVariable(t *testing.T) {
	_, err := load(t, onePBX+"nats: {bogus_in_file: 1}\n", []string{
		"AMI_BRIDGE_NATS__URLS=nats://x",
		"AMI_BRIDGE_NATS__EMBEDDED__LISTN=:0",
		"AMI_BRIDGE_LOG__COLOUR=yes",
	})
	got := strings.Join(problemsOf(t, err), "\n")
	for _, want := range []string{
		"urls (from AMI_BRIDGE_NATS__URLS)",
		"nats.embedded: unknown key(s): listn (from AMI_BRIDGE_NATS__EMBEDDED__LISTN)",
		"log: unknown key(s): colour (from AMI_BRIDGE_LOG__COLOUR)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	// A key of the file is named as before.
	if !strings.Contains(got, "bogus_in_file") || strings.Contains(got, "bogus_in_file (from") {
		t.Errorf("the file's unknown key:\n%s", got)
	}
}

func TestLoad_ServersEnvReplacesTheList(t *testing.T) {
	cfg := mustLoad(t, onePBX, []string{
		`AMI_BRIDGE_SERVERS=[{"name":"a","url":"tcp://u@h1","secret_env":"A_SECRET"},{"name":"b","url":"tls://u@h2:5039","secret_env":"B_SECRET","action_timeout":"2s"}]`,
		"A_SECRET=alpha", "B_SECRET=bravo",
	})
	if len(cfg.Servers) != 2 {
		t.Fatalf("servers = %d, want 2", len(cfg.Servers))
	}
	a, b := cfg.Servers[0], cfg.Servers[1]
	if a.Name != "a" || a.Secret.Reveal() != "alpha" || a.ActionTimeout != bridge.DefaultActionTimeout {
		t.Errorf("servers[0] = %+v", a)
	}
	if b.Name != "b" || b.Secret.Reveal() != "bravo" || b.ActionTimeout != 2*time.Second || b.Endpoint != "tls://u@h2:5039" {
		t.Errorf("servers[1] = %+v", b)
	}
}

func TestLoad_ReportsEveryProblemAtOnce(t *testing.T) {
	yaml := `
nats:
  url: "nats://u:p@[bad"
  prefix: "ami.x y"
  user: bob
jetstream:
  enabled: true
  stream: a.b
  max_age: 1m
  duplicates: 2m
  max_pending: -1
servers:
  - name: "pbx 1"
    url: "tcp://admin:pw@host:99999"
    auth: sha1
    actoin_timeout: 3s
    events:
      include: ["[bad", "Queue[A-Z]*"]
      exclude: ["Queue[z-a]*"]
    actions:
      deny: [""]
  - name: pbx2
    url: "tls://admin@pbx2"
    secret_env: UNSET_VAR
    tls: {cert_file: /x}
    reconnect: {min: 2s, max: 1s}
    action_timeout: 10
  - name: pbx2
    url: "tcp://admin:pw@h"
    tls: {insecure_skip_verify: true}
    ping_interval: -1s
    max_action_timeout: 1s
    max_reply_entries: -1
    max_reply_bytes: -1
  - url: "host"
log:
  level: loud
  format: xml
shutdown_timeout: 0s
event_buffer: -1
event_buffer_bytes: -1
bogus: 1
`
	_, err := load(t, yaml, []string{"AMI_BRIDGE_NATS_URL=x", "AMI_BRIDGE_SERVERS__0__URL=y", "AMI_BRIDGE_SERVERS={"})
	got := problemsOf(t, err)
	want := []string{
		"AMI_BRIDGE_NATS_URL: nested keys take a double underscore, as in AMI_BRIDGE_NATS__URL",
		"AMI_BRIDGE_SERVERS__0__URL: environment variables cannot address list items",
		"AMI_BRIDGE_SERVERS: not a YAML or JSON list of servers",
		"servers[1].action_timeout: a duration needs a unit, as in 10s",
		"servers[0]: unknown key(s): actoin_timeout",
		"unknown key(s): bogus",
		"nats.url nats://u:xxxxx@[bad: malformed URL",
		`nats.prefix: "ami.x y": want dot-separated tokens`,
		"nats: user and password go together",
		`jetstream.stream: "a.b": no`,
		"jetstream.duplicates: 2m0s is longer than max age 1m0s",
		"jetstream.max_pending: must be positive",
		`servers[0] (pbx 1): name: "pbx 1": want [A-Za-z0-9_-]+`,
		"servers[0] (pbx 1): url tcp://admin:xxxxx@host:99999: invalid port",
		`servers[0] (pbx 1): auth: "sha1": want plain or md5`,
		`servers[0] (pbx 1): events.include[0]: "[bad" is not a valid glob`,
		`servers[0] (pbx 1): events.exclude[0]: "Queue[z-a]*" is not a valid glob`, // path.Match accepted it
		"servers[0] (pbx 1): actions.deny[0]: empty pattern",
		"servers[1] (pbx2): secret_env: environment variable UNSET_VAR is not set",
		"servers[1] (pbx2).tls: cert_file and key_file go together",
		"servers[1] (pbx2): reconnect.max: 1s is shorter than the reconnect min 2s",
		`servers[2] (pbx2): name: "pbx2" is already the name of servers[1]`,
		"servers[2] (pbx2): tls is set but the url is not tls://",
		"servers[2] (pbx2): max_action_timeout: 1s is shorter than the action timeout 10s",
		"servers[2] (pbx2): ping_interval: must be 0 (off) or positive",
		"servers[2] (pbx2): max_reply_entries: must be positive",
		"servers[2] (pbx2): max_reply_bytes: must be positive",
		"servers[3]: name: missing",
		"servers[3]: url host: has no user",
		"servers[3]: no secret",
		`log.level: "loud" must be`,
		`log.format: "xml" must be`,
		"shutdown_timeout: must be positive",
		"event_buffer: must be positive",
		"event_buffer_bytes: must be positive",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, w) }) {
			t.Errorf("missing problem %q", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("%d problems", len(got))) {
		t.Errorf("error text does not count the problems: %s", err)
	}
}

func TestLoad_NoServers(t *testing.T) {
	_, err := load(t, "", nil)
	if got := problemsOf(t, err); !slices.Equal(got, []string{"servers: at least one PBX is required"}) {
		t.Errorf("problems = %q", got)
	}
}

func TestLoad_UnreadableFileIsTheOnlyProblem(t *testing.T) {
	_, err := load(t, "", nil, "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if got := problemsOf(t, err); len(got) != 1 || !strings.Contains(got[0], "missing.yaml") {
		t.Errorf("problems = %q", got)
	}
}

func TestLoad_SecretSources(t *testing.T) {
	dir := t.TempDir()
	withNewline := filepath.Join(dir, "secret")
	os.WriteFile(withNewline, []byte("from-file\r\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)

	tests := []struct {
		name    string
		server  string // keys after name and the url's host
		url     string
		environ []string
		secret  string
		problem string
	}{
		{name: "in the url, percent-decoded", url: "tcp://admin:p%40ss@h", secret: "p@ss"},
		{name: "secret_env", url: "tcp://admin@h", server: "secret_env: PBX_SECRET", environ: []string{"PBX_SECRET=from-env"}, secret: "from-env"},
		{name: "secret_file without its newline", url: "tcp://admin@h", server: "secret_file: " + withNewline, secret: "from-file"},
		{name: "secret_env unset", url: "tcp://admin@h", server: "secret_env: PBX_SECRET", problem: "secret_env: environment variable PBX_SECRET is not set"},
		{name: "secret_env empty", url: "tcp://admin@h", server: "secret_env: PBX_SECRET", environ: []string{"PBX_SECRET="}, problem: "the secret is empty"},
		{name: "secret_file missing", url: "tcp://admin@h", server: "secret_file: " + filepath.Join(dir, "nope"), problem: "secret_file: open " + filepath.Join(dir, "nope")},
		{name: "secret_file empty", url: "tcp://admin@h", server: "secret_file: " + empty, problem: "the secret is empty"},
		{name: "none", url: "tcp://admin@h", problem: "no secret: set secret_env or secret_file"},
		{name: "url and secret_env", url: "tcp://admin:x@h", server: "secret_env: PBX_SECRET", environ: []string{"PBX_SECRET=y"}, problem: "the secret is given more than once"},
		{name: "secret_env and secret_file", url: "tcp://admin@h", server: "secret_env: PBX_SECRET\n    secret_file: " + withNewline, environ: []string{"PBX_SECRET=y"}, problem: "the secret is given more than once"},
		{name: "control character", url: "tcp://admin@h", server: "secret_env: PBX_SECRET", environ: []string{"PBX_SECRET=a\nAction: Originate"}, problem: "the secret holds a CR, LF or NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := fmt.Sprintf("servers:\n  - name: pbx\n    url: %q\n", tt.url)
			if tt.server != "" {
				yaml += "    " + tt.server + "\n"
			}
			cfg, err := load(t, yaml, tt.environ)
			if tt.problem != "" {
				got := problemsOf(t, err)
				if len(got) != 1 || !strings.Contains(got[0], tt.problem) {
					t.Errorf("problems = %q, want one with %q", got, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Servers[0]
			if s.Secret.Reveal() != tt.secret {
				t.Errorf("secret = %q, want %q", s.Secret.Reveal(), tt.secret)
			}
			if s.Endpoint != "tcp://admin@h:5038" {
				t.Errorf("endpoint = %q, want the url without its secret", s.Endpoint)
			}
		})
	}
}

// TestLoad_NoSecretInErrors makes every check that could quote a secret
// fail, and looks for the secrets in the message.
func TestLoad_NoSecretInErrors(t *testing.T) {
	secrets := []string{"UrlSecret1", "NatsSecret2", "EnvSecret3", "TokenSecret4", "PortSecret5"}
	yaml := `
nats:
  url: "nats://bob:NatsSecret2@[bad,nats://TokenSecret4@h:x"
servers:
  - name: "bad name"
    url: "tcp://admin:UrlSecret1@host:99999"
  - name: pbx2
    url: "tcp://admin@h"
    secret_env: S
    action_timeout: EnvSecret3
  - name: pbx3
    url: "tcp://admin:PortSecret5@[::1"
`
	_, err := load(t, yaml, []string{"S=EnvSecret3"})
	problemsOf(t, err)
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error holds %q:\n%s", s, err)
		}
	}
}

func TestConfig_SecretsDoNotPrint(t *testing.T) {
	cfg := mustLoad(t, onePBX+"nats:\n  url: nats://h:4222,nats://tok-tok-tok@h2\n  token: tik-tik-tik\n", nil)
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%#v", cfg.Servers[0]), string(js)} {
		for _, s := range []string{"tok-tok-tok", "tik-tik-tik", "s3cret"} {
			if strings.Contains(out, s) {
				t.Errorf("printed config holds %q: %s", s, out)
			}
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, ami, nats string }{
		{"tcp://admin:s3cret@h:5038", "tcp://admin:xxxxx@h:5038", "tcp://admin:xxxxx@h:5038"},
		{"admin:s3cret@h", "admin:xxxxx@h", "admin:xxxxx@h"},
		{"tcp://admin@h", "tcp://admin@h", "tcp://xxxxx@h"},
		{"tcp://h:5038", "tcp://h:5038", "tcp://h:5038"},
		{"tcp://admin:p@ss:w/rd@h", "tcp://admin:xxxxx@h", "tcp://admin:xxxxx@h"},
		{"tcp://admin:s3cret@[::1", "tcp://admin:xxxxx@[::1", "tcp://admin:xxxxx@[::1"},
		{"nats://a:b@h1,nats://tok@h2", "nats://a:xxxxx@h2", "nats://a:xxxxx@h1,nats://xxxxx@h2"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.ami {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.ami)
		}
		if got := RedactNATSURL(tt.in); got != tt.nats {
			t.Errorf("RedactNATSURL(%q) = %q, want %q", tt.in, got, tt.nats)
		}
	}
}

func TestLoad_EndpointRoundTripsAnyUser(t *testing.T) {
	cfg := mustLoad(t, "servers:\n  - name: p\n    url: \"tls://we%3Aird%40user:pw@[::1]:6000\"\n", nil)
	s := cfg.Servers[0]
	if s.Endpoint != "tls://we%3Aird%40user@[::1]:6000" {
		t.Errorf("endpoint = %q", s.Endpoint)
	}
	ep, err := amiproto.ParseURL(s.Endpoint)
	if err != nil || ep.User != "we:ird@user" || ep.Secret != "" || !ep.TLS || ep.Addr != "[::1]:6000" {
		t.Errorf("ParseURL(endpoint) = %+v, %v", ep, err)
	}
	if s.Secret.Reveal() != "pw" {
		t.Errorf("secret = %q", s.Secret.Reveal())
	}
}

func TestLoad_NATSCredentials(t *testing.T) {
	creds := writeFile(t, "x.creds", "creds")
	tests := []struct {
		name, nats string
		problem    string
	}{
		{name: "user and password, embedded", nats: "user: a\n  password: b"},
		{name: "token, external", nats: "url: nats://h\n  token: t"},
		{name: "creds, external", nats: "url: nats://h\n  creds_file: " + creds},
		{name: "two methods", nats: "url: nats://h\n  token: t\n  creds_file: " + creds, problem: "nats: set only one of"},
		{name: "creds need an external server", nats: "creds_file: " + creds, problem: "need an external nats.url"},
		{name: "tls needs an external server", nats: "tls: {insecure_skip_verify: true}", problem: "nats.tls: needs an external nats.url"},
		{name: "missing creds file", nats: "url: nats://h\n  creds_file: /nonexistent.creds", problem: "nats.creds_file: open /nonexistent.creds"},
		{name: "bad listen", nats: "embedded: {listen: nope}", problem: `nats.embedded.listen: "nope" is not host:port`},
		{name: "bad scheme", nats: "url: http://h", problem: "scheme must be nats, tls, ws or wss"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, onePBX+"nats:\n  "+tt.nats+"\n", nil)
			if tt.problem == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			got := problemsOf(t, err)
			if len(got) != 1 || !strings.Contains(got[0], tt.problem) {
				t.Errorf("problems = %q, want one with %q", got, tt.problem)
			}
		})
	}
}

func TestLoad_ServerTLS(t *testing.T) {
	caFile := writeFile(t, "ca.pem", selfSignedPEM(t))
	notPEM := writeFile(t, "bad.pem", "not a certificate")

	cfg := mustLoad(t, fmt.Sprintf(`
servers:
  - name: pbx
    url: tls://admin:s@pbx.example.com
    tls: {ca_file: %s}
  - name: pbx2
    url: tls://admin:s@10.0.0.1
    tls: {server_name: asterisk.local, insecure_skip_verify: true}
  - name: pbx3
    url: tls://admin:s@10.0.0.2
`, caFile), nil)
	a, b, c := cfg.Servers[0], cfg.Servers[1], cfg.Servers[2]
	if a.ClientTLS == nil || a.ClientTLS.RootCAs == nil || a.ClientTLS.ServerName != "pbx.example.com" {
		t.Errorf("pbx tls = %+v", a.ClientTLS)
	}
	if a.Endpoint != "tls://admin@pbx.example.com:5039" {
		t.Errorf("pbx endpoint = %q", a.Endpoint)
	}
	if b.ClientTLS == nil || b.ClientTLS.ServerName != "asterisk.local" || !b.ClientTLS.InsecureSkipVerify {
		t.Errorf("pbx2 tls = %+v", b.ClientTLS)
	}
	if c.ClientTLS != nil {
		t.Errorf("pbx3 tls = %+v, want nil: amiproto's defaults", c.ClientTLS)
	}

	_, err := load(t, "servers:\n  - name: p\n    url: tls://a:s@h\n    tls: {ca_file: "+notPEM+"}\n", nil)
	if got := problemsOf(t, err); len(got) != 1 || !strings.Contains(got[0], "no PEM certificate") {
		t.Errorf("problems = %q", got)
	}
}

func selfSignedPEM(t *testing.T) string {
	t.Helper()
	cert, _, err := amitest.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		in   string
		port int
		ok   bool
	}{
		{"127.0.0.1:4222", 4222, true},
		{"127.0.0.1:0", 0, true},
		{"[::1]:4222", 4222, true},
		{":4222", 4222, true},
		{"127.0.0.1", 0, false},
		{"127.0.0.1:65536", 0, false},
		{"127.0.0.1:x", 0, false},
	}
	for _, tt := range tests {
		port, err := ParseListen(tt.in)
		if (err == nil) != tt.ok || port != tt.port {
			t.Errorf("ParseListen(%q) = %d, %v", tt.in, port, err)
		}
	}
}

// TestExampleConfig keeps config.example.yaml loadable and its documented
// defaults true.
func TestExampleConfig(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--config", "../../../../config.example.yaml"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(fs, []string{"PBX1_SECRET=one", "PBX2_SECRET=two"})
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	if cfg.NATS.URL != def.NATS.URL || !reflect.DeepEqual(cfg.NATS.Embedded, def.NATS.Embedded) || cfg.NATS.Prefix != def.NATS.Prefix ||
		cfg.JetStream != def.JetStream || cfg.Idempotency != def.Idempotency || cfg.State != def.State || cfg.Log != def.Log || cfg.HTTP != def.HTTP || cfg.ShutdownTimeout != def.ShutdownTimeout ||
		cfg.EventBuffer != def.EventBuffer || cfg.EventBufferBytes != def.EventBufferBytes || cfg.MemoryLimit != def.MemoryLimit {
		t.Errorf("example differs from the defaults:\n got %+v\nwant %+v", cfg, def)
	}
	pbx1, ds := cfg.Servers[0], DefaultServer()
	if pbx1.Auth != ds.Auth || pbx1.ActionTimeout != ds.ActionTimeout || pbx1.MaxActionTimeout != ds.MaxActionTimeout ||
		pbx1.PingInterval != ds.PingInterval || pbx1.Reconnect != ds.Reconnect || pbx1.ActionSessions != ds.ActionSessions ||
		pbx1.MaxReplyEntries != ds.MaxReplyEntries || pbx1.MaxReplyBytes != ds.MaxReplyBytes || pbx1.Actions.GenericSubject != ds.Actions.GenericSubject {
		t.Errorf("servers[0] differs from the defaults: %+v", pbx1)
	}
	if pbx1.Secret.Reveal() != "one" || cfg.Servers[1].Secret.Reveal() != "two" {
		t.Errorf("secrets not resolved from secret_env")
	}
}

func TestLoad_EmptyDenyListStaysEmptyNotAbsent(t *testing.T) {
	cfg := mustLoad(t, onePBX+"    actions: {deny: []}\n  - name: pbx2\n    url: tcp://a:b@h\n", nil)
	if d := cfg.Servers[0].Actions.Deny; d == nil || len(d) != 0 {
		t.Errorf("deny: [] gave %#v, want an empty non-nil list (no default deny)", d)
	}
	if d := cfg.Servers[1].Actions.Deny; d != nil {
		t.Errorf("absent deny gave %#v, want nil (the bridge's default deny)", d)
	}
}

// TestLoad_MaxPendingRequests checks servers[].max_pending_requests: the
// bridge's default when absent, a value in bounds, and a problem naming
// the key outside them.
func TestLoad_MaxPendingRequests(t *testing.T) {
	if got := mustLoad(t, onePBX, nil).Servers[0].MaxPendingRequests; got != bridge.DefaultMaxPendingRequests {
		t.Errorf("absent max_pending_requests = %d, want the bridge's default %d", got, bridge.DefaultMaxPendingRequests)
	}
	if got := mustLoad(t, onePBX+"    max_pending_requests: 7\n", nil).Servers[0].MaxPendingRequests; got != 7 {
		t.Errorf("max_pending_requests: 7 loaded as %d", got)
	}
	// 0 takes the bridge's default, as an absent key does.
	for _, n := range []int{-1, 65536 + 1} {
		_, err := load(t, onePBX+fmt.Sprintf("    max_pending_requests: %d\n", n), nil)
		want := fmt.Sprintf("servers[0] (pbx1): max_pending_requests: %d: want 1 to 65536", n)
		if probs := problemsOf(t, err); !slices.Contains(probs, want) {
			t.Errorf("max_pending_requests: %d gave problems %q, want %q", n, probs, want)
		}
	}
}

// TestLoad_ActionSessions checks servers[].action_sessions: the bridge's
// default when absent, any value in the bridge's bounds, and a problem
// naming the key outside them.
func TestLoad_ActionSessions(t *testing.T) {
	if got := mustLoad(t, onePBX, nil).Servers[0].ActionSessions; got != bridge.DefaultActionSessions {
		t.Errorf("absent action_sessions = %d, want the bridge's default %d", got, bridge.DefaultActionSessions)
	}
	for _, n := range []int{1, 4, 64} {
		cfg := mustLoad(t, onePBX+fmt.Sprintf("    action_sessions: %d\n", n), nil)
		if got := cfg.Servers[0].ActionSessions; got != n {
			t.Errorf("action_sessions: %d loaded as %d", n, got)
		}
	}
	env := []string{`AMI_BRIDGE_SERVERS=[{"name":"pbx1","url":"tcp://a:b@h","action_sessions":3}]`}
	if got := mustLoad(t, "", env).Servers[0].ActionSessions; got != 3 {
		t.Errorf("action_sessions from AMI_BRIDGE_SERVERS = %d, want 3", got)
	}
	for _, n := range []int{-1, 64 + 1} {
		_, err := load(t, onePBX+fmt.Sprintf("    action_sessions: %d\n", n), nil)
		probs := problemsOf(t, err)
		want := fmt.Sprintf("servers[0] (pbx1): action_sessions: %d: want 1 to 64", n)
		if !slices.Contains(probs, want) {
			t.Errorf("action_sessions: %d gave problems %q, want %q", n, probs, want)
		}
	}
}

// TestLoad_ReplyPrefixes: nats.reply_prefixes takes inbox prefixes and
// refuses, by key, one that would let a requester aim the bridge's reply
// at NATS's subjects ($JS, $KV, $SYS, $SRV), the bridge's own subjects or
// its own inboxes.
func TestLoad_ReplyPrefixes(t *testing.T) {
	cfg, err := load(t, "nats:\n  reply_prefixes: [crm_inbox, _INBOX.crm]\nservers:\n  - {name: pbx1, url: \"tcp://admin:pw@h\"}\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.NATS.ReplyPrefixes, []string{"crm_inbox", "_INBOX.crm"}) {
		t.Errorf("reply_prefixes = %q", cfg.NATS.ReplyPrefixes)
	}
	_, err = load(t, `nats:
  reply_prefixes: ["", "$", "ami.", "ami", "$JS.API", "_INBOX.>", "_INBOX.ami_bridge", ok_inbox]
servers:
  - {name: pbx1, url: "tcp://admin:pw@h"}
`, nil)
	got := problemsOf(t, err)
	want := []string{
		`nats.reply_prefixes[0]: "": empty`,
		`nats.reply_prefixes[1]: "$": subjects starting with $ belong to NATS`,
		`nats.reply_prefixes[2]: "ami.": an empty token`,
		`nats.reply_prefixes[3]: "ami": it covers or lies under the bridge's own subjects ami.>`,
		`nats.reply_prefixes[4]: "$JS.API": subjects starting with $ belong to NATS`,
		`nats.reply_prefixes[5]: "_INBOX.>": a wildcard`,
		`nats.reply_prefixes[6]: "_INBOX.ami_bridge": it lies under the bridge's own inbox prefix`,
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, w) }) {
			t.Errorf("missing problem %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}

// TestLoad_NATSService: nats.service takes the login shapes of nats.*,
// from the file or the environment, with the same rules, and the
// embedded server needs user/password for both connections.
func TestLoad_NATSService(t *testing.T) {
	creds := writeFile(t, "svc.creds", "creds")
	tests := []struct {
		name, nats string
		problem    string
	}{
		{name: "user and password, external", nats: "url: nats://h\n  user: bridge\n  password: p\n  service: {user: bridge-service, password: q}"},
		{name: "token, external", nats: "url: nats://h\n  service: {token: t}"},
		{name: "creds, external", nats: "url: nats://h\n  service: {creds_file: " + creds + "}"},
		{name: "users, embedded", nats: "user: bridge\n  password: p\n  service: {user: bridge-service, password: q}"},
		{name: "two methods", nats: "url: nats://h\n  service: {token: t, creds_file: " + creds + "}", problem: "nats.service: set only one of"},
		{name: "user without password", nats: "url: nats://h\n  service: {user: s}", problem: "nats.service: user and password go together"},
		{name: "missing creds file", nats: "url: nats://h\n  service: {creds_file: /nonexistent.creds}", problem: "nats.service.creds_file: open /nonexistent.creds"},
		{name: "missing seed file", nats: "url: nats://h\n  service: {nkey_seed_file: /nonexistent.nk}", problem: "nats.service.nkey_seed_file: open /nonexistent.nk"},
		{name: "embedded, token", nats: "user: bridge\n  password: p\n  service: {token: t}", problem: "with the embedded server, both"},
		{name: "embedded, no main user", nats: "service: {user: s, password: q}", problem: "with the embedded server, both"},
		{name: "embedded, same user", nats: "user: bridge\n  password: p\n  service: {user: bridge, password: q}", problem: "must differ from nats.user"},
		{name: "external, same user", nats: "url: nats://h\n  user: bridge\n  password: p\n  service: {user: bridge, password: p}", problem: "the same user as nats.user"},
		{name: "unknown key", nats: "url: nats://h\n  service: {usr: s}", problem: "usr"},
		{name: "credentials in the url", nats: "url: nats://h1,nats://bob:Url-Pass-9@h2\n  service: {user: s, password: q}", problem: "nats.url nats://bob:xxxxx@h2 holds credentials"},
		{name: "token in the url", nats: "url: nats://Url-Token-8@h\n  service: {user: s, password: q}", problem: "holds credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, onePBX+"nats:\n  "+tt.nats+"\n", nil)
			if tt.problem == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			got := problemsOf(t, err)
			if len(got) != 1 || !strings.Contains(got[0], tt.problem) {
				t.Errorf("problems = %q, want one with %q", got, tt.problem)
			}
		})
	}

	t.Run("from the environment", func(t *testing.T) {
		cfg := mustLoad(t, onePBX, []string{
			"AMI_BRIDGE_NATS__URL=nats://h",
			"AMI_BRIDGE_NATS__SERVICE__USER=bridge-service",
			"AMI_BRIDGE_NATS__SERVICE__PASSWORD=Svc-Pass-1",
		})
		s := cfg.NATS.Service
		if !s.IsSet() || s.User != "bridge-service" || s.Password.Reveal() != "Svc-Pass-1" {
			t.Errorf("nats.service = %#v", s)
		}
		cfg = mustLoad(t, onePBX, []string{"AMI_BRIDGE_NATS__URL=nats://h", "AMI_BRIDGE_NATS__SERVICE__TOKEN=Svc-Token-2",
			"AMI_BRIDGE_NATS__SERVICE__CREDS_FILE=", "AMI_BRIDGE_NATS__SERVICE__NKEY_SEED_FILE="})
		if cfg.NATS.Service.Token.Reveal() != "Svc-Token-2" {
			t.Errorf("nats.service.token = %q", cfg.NATS.Service.Token.Reveal())
		}
		if mustLoad(t, onePBX, nil).NATS.Service.IsSet() {
			t.Error("nats.service is set with no key given")
		}
	})

	t.Run("secrets never print nor leak", func(t *testing.T) {
		cfg := mustLoad(t, onePBX, []string{"AMI_BRIDGE_NATS__URL=nats://h", "AMI_BRIDGE_NATS__SERVICE__USER=s", "AMI_BRIDGE_NATS__SERVICE__PASSWORD=Svc-Pass-3"})
		js, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, out := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%#v", cfg.NATS), string(js)} {
			if strings.Contains(out, "Svc-Pass-3") {
				t.Errorf("printed config holds the service password: %s", out)
			}
		}
		// A problem elsewhere that quotes the service password or token.
		for _, env := range [][]string{
			{"AMI_BRIDGE_NATS__SERVICE__USER=s", "AMI_BRIDGE_NATS__SERVICE__PASSWORD=Svc\r\nPass-4", "AMI_BRIDGE_LOG__LEVEL=Svc\r\nPass-4"},
			{"AMI_BRIDGE_NATS__SERVICE__TOKEN=Svc\tToken-5", "AMI_BRIDGE_LOG__LEVEL=Svc\tToken-5"},
		} {
			_, err := load(t, onePBX, append(env, "AMI_BRIDGE_NATS__URL=nats://h"))
			got := problemsOf(t, err)
			secret := strings.TrimPrefix(env[len(env)-1], "AMI_BRIDGE_LOG__LEVEL=")
			for _, form := range escapedForms(secret) {
				if strings.Contains(strings.Join(got, "\n"), form) {
					t.Errorf("problems %q hold the service secret as %q", got, form)
				}
			}
			if !strings.Contains(strings.Join(got, "\n"), `log.level: "xxxxx"`) {
				t.Errorf("problems %q: want log.level's, with the secret masked", got)
			}
		}
	})
}

// TestLoad_Idempotency: idempotency.window and bucket reach the bridge as
// loaded, and a window the server cannot keep is a problem naming the key.
func TestLoad_Idempotency(t *testing.T) {
	cfg := mustLoad(t, onePBX+"idempotency: {window: 30s, bucket: reqs}\n", nil)
	if _, o := cfg.Bridge(); o.Idempotency.Window != 30*time.Second || o.Idempotency.Bucket != "reqs" {
		t.Errorf("idempotency options %+v", o.Idempotency)
	}
	_, err := load(t, onePBX+"idempotency: {window: 1500ms}\n", nil)
	if err == nil || !strings.Contains(err.Error(), "idempotency.window: 1.5s: want whole seconds") {
		t.Errorf("window 1500ms: %v", err)
	}
}

// TestLoad_State: the state keys reach the bridge with their defaults,
// from the file, the environment and --state, and a state that cannot
// work is refused at load.
func TestLoad_State(t *testing.T) {
	_, o := mustLoad(t, onePBX, nil).Bridge()
	want := bridge.StateOptions{Bucket: bridge.DefaultStateBucket, Replicas: 1, Records: true, FlushInterval: bridge.DefaultStateFlushInterval}
	if o.State != want {
		t.Errorf("default state options %+v, want %+v", o.State, want)
	}
	_, o = mustLoad(t, onePBX+"state: {enabled: true, bucket: calls, records: false, flush_interval: 1s}\n", nil).Bridge()
	want = bridge.StateOptions{Enabled: true, Bucket: "calls", Replicas: 1, FlushInterval: time.Second}
	if o.State != want {
		t.Errorf("state options %+v, want %+v", o.State, want)
	}
	if cfg := mustLoad(t, onePBX, []string{"AMI_BRIDGE_STATE__ENABLED=true", "AMI_BRIDGE_STATE__BUCKET=B2"}); !cfg.State.Enabled || cfg.State.Bucket != "B2" {
		t.Errorf("state from the environment: %+v", cfg.State)
	}
	if cfg := mustLoad(t, onePBX, nil, "--state"); !cfg.State.Enabled {
		t.Errorf("--state: %+v", cfg.State)
	}
	for yaml, problem := range map[string]string{
		"state: {enabled: true, bucket: a.b}\n":          `state.bucket: "a.b": a KV bucket name is [A-Za-z0-9_-]+`,
		"state: {enabled: true, flush_interval: 0s}\n":   "state.flush_interval: must be positive",
		"state: {enabled: true, flush_interval: -1s}\n":  "state.flush_interval: must be positive",
		"state: {enabled: true, replicas: 3}\n":          "state.replicas: 3 needs a NATS cluster at nats.url; the embedded server is a single node",
		"state: {enabled: true, replicas: 9}\n":          "state.replicas: 9: want 1 to 5",
		"state: {enabled: true, bucket: 'with space'}\n": `state.bucket: "with space": a KV bucket name is [A-Za-z0-9_-]+`,
	} {
		_, err := load(t, onePBX+yaml, nil)
		if probs := problemsOf(t, err); !slices.Contains(probs, problem) {
			t.Errorf("%s gave problems %q, want %q", strings.TrimSpace(yaml), probs, problem)
		}
	}
}
