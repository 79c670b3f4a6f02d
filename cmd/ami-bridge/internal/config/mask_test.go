package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// spellings returns sec in every form a message could quote it in,
// derived here independently of escapedForms.
func spellings(sec string) []string {
	unquote := func(q string) string { return q[1 : len(q)-1] }
	j, _ := json.Marshal(sec)
	return []string{
		sec,
		unquote(fmt.Sprintf("%q", sec)),
		unquote(fmt.Sprintf("%+q", sec)),
		unquote(fmt.Sprintf("%#v", sec)),
		unquote(string(j)),
		url.QueryEscape(sec),
		url.PathEscape(sec),
		strings.TrimPrefix(url.UserPassword("u", sec).String(), "u:"),
	}
}

// leaked returns the first spelling of a secret found in out.
func leaked(out string, secrets ...string) (string, bool) {
	for _, sec := range secrets {
		for _, form := range spellings(sec) {
			if strings.Contains(out, form) {
				return form, true
			}
		}
	}
	return "", false
}

var awkwardSecrets = []string{
	"Plain-Secret-1",
	"cr\rlf\nnul\x00-Secret-2",
	`quote"back\slash-Secret-3`,
	"<html>&amp;-Secret-4",
	"spa ce/at@colon:+plus-Secret-5",
	"bytes\xff\xfe-Secret-6",
	"ünï\u2028code-Secret-7",
	"tab\tbell\a-Secret-8",
}

func TestMaskAll_EveryEscapedForm(t *testing.T) {
	for _, sec := range awkwardSecrets {
		for _, form := range spellings(sec) {
			msg := "servers[0]: something is wrong (got " + form + ") twice: " + form
			out := maskAll(msg, []string{"other-secret", sec})
			if f, ok := leaked(out, sec); ok {
				t.Errorf("secret %q: %q still holds %q", sec, out, f)
			}
			if strings.Count(out, redacted) != 2 || !strings.HasPrefix(out, "servers[0]: something is wrong (got ") {
				t.Errorf("secret %q: masked %q as %q", sec, msg, out)
			}
		}
	}
}

func TestMaskAll_KeepsTheRest(t *testing.T) {
	tests := []struct {
		msg     string
		secrets []string
		want    string
	}{
		{"no secret here", []string{"Hunter2"}, "no secret here"},
		{"ab is too short to mask: ab", []string{"ab", ""}, "ab is too short to mask: ab"},
		{"abc and abc", []string{"abc"}, "xxxxx and xxxxx"},
		{"one Alpha1 two Bravo2", []string{"Alpha1", "Bravo2"}, "one xxxxx two xxxxx"},
		{"no secrets at all", nil, "no secrets at all"},
	}
	for _, tt := range tests {
		if got := maskAll(tt.msg, tt.secrets); got != tt.want {
			t.Errorf("maskAll(%q, %q) = %q, want %q", tt.msg, tt.secrets, got, tt.want)
		}
	}
}

func TestSecretsOf(t *testing.T) {
	c := Config{
		NATS: NATS{
			URL:      "nats://bob:NatsUrlPass@h1:4222,nats://NatsUrlToken@h2",
			Password: "NatsPassword",
			Token:    "NatsToken",
		},
		Servers: []Server{
			{URL: "tcp://admin:UrlSecret@pbx1", Secret: "ResolvedSecret"},
			{URL: "tcp://admin@pbx2", SecretEnv: "REFUSED_ENV"}, // given twice: not resolved
			{URL: "tcp://admin@pbx3", SecretEnv: "UNSET_ENV"},
		},
	}
	env := lookupIn([]string{"REFUSED_ENV=EnvSecret", "OTHER=NotASecret"})
	got := secretsOf(&c, env)
	for _, want := range []string{"NatsUrlPass", "NatsUrlToken", "NatsPassword", "NatsToken", "UrlSecret", "ResolvedSecret", "EnvSecret"} {
		if !slices.Contains(got, want) {
			t.Errorf("secretsOf lacks %q: %q", want, got)
		}
	}
	for _, not := range []string{"bob", "admin", "NotASecret"} {
		if slices.Contains(got, not) {
			t.Errorf("secretsOf holds %q, not a secret", not)
		}
	}
}

// TestLoad_SecretProblemsNeverLeak provokes every problem that involves a
// secret and looks for the secret, in any spelling, in the error.
func TestLoad_SecretProblemsNeverLeak(t *testing.T) {
	dir := t.TempDir()
	crFile := writeFile(t, "cr", "file\rSecret-9\n")
	tests := []struct {
		name    string
		yaml    string
		environ []string
		secret  string
		problem string
	}{
		{"CR and LF from secret_env", "servers: [{name: a, url: tcp://u@h, secret_env: S}]",
			[]string{"S=env\r\nSecret-1"}, "env\r\nSecret-1", "holds a CR, LF or NUL"},
		{"NUL from the url", `servers: [{name: a, url: "tcp://u:url%00Secret-2@h"}]`,
			nil, "url\x00Secret-2", "holds a CR, LF or NUL"},
		{"CR from secret_file", "servers: [{name: a, url: tcp://u@h, secret_file: " + crFile + "}]",
			nil, "file\rSecret-9", "holds a CR, LF or NUL"},
		{"secret_file is unreadable", "servers: [{name: a, url: tcp://u@h, secret_file: " + dir + "}]",
			nil, "", "secret_file: read " + dir},
		{"secret given twice", "servers: [{name: a, url: \"tcp://u:Url-Secret-3@h\", secret_env: S}]",
			[]string{"S=Env-Secret-4\x00"}, "Env-Secret-4\x00", "given more than once"},
		{"secret in a bad url", `servers: [{name: a, url: "tcp://u:Bad\rUrl-Secret-5@h:99999"}]`,
			nil, "Bad\rUrl-Secret-5", "invalid port"},
		{"NATS password quoted by another key's check", "servers: [{name: a, url: tcp://u:p4ss@h}]",
			[]string{"AMI_BRIDGE_NATS__USER=bob", "AMI_BRIDGE_NATS__PASSWORD=nats\r\nSecret-6", "AMI_BRIDGE_LOG__LEVEL=nats\r\nSecret-6"},
			"nats\r\nSecret-6", `log.level: "xxxxx" must be`},
		{"secret_env value quoted by a duration's check", "servers: [{name: a, url: tcp://u@h, secret_env: S, action_timeout: \"dur\\tSecret-7\"}]",
			[]string{"S=dur\tSecret-7"}, "dur\tSecret-7", "action_timeout"},
		{"NATS token in a malformed url", "nats: {url: \"nats://tok\\u2028Secret-8@[bad\"}\nservers: [{name: a, url: tcp://u:p4ss@h}]",
			nil, "tok\u2028Secret-8", "malformed URL"},
		{"bad servers list in the environment", "",
			[]string{`AMI_BRIDGE_SERVERS=[{"name":"a","url":"tcp://u:List\"Secret-10@h"`}, `List"Secret-10`, "not a YAML or JSON list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.yaml, tt.environ)
			msg := strings.Join(problemsOf(t, err), "\n")
			if !strings.Contains(msg, tt.problem) {
				t.Errorf("no problem %q in:\n%s", tt.problem, msg)
			}
			if tt.secret == "" {
				return
			}
			if f, ok := leaked(err.Error(), tt.secret); ok {
				t.Errorf("the error holds %q:\n%s", f, err)
			}
		})
	}
}
