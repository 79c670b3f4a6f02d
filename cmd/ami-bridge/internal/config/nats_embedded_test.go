package config

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// siteYAML is a site: the embedded server as a leaf node of a hub, with
// its own JetStream domain.
const siteYAML = onePBX + `
jetstream: {enabled: true}
nats:
  embedded:
    domain: site1
    leafnodes:
      remotes:
        - url: nats-leaf://hub1:7422, nats-leaf://hub2:7422
          user: site1
          password: Leaf-Secret-1
        - url: tls://Leaf-Token-2@hub3:7422
          tls: {ca_file: %s}
`

func TestLoad_LeafnodeSite(t *testing.T) {
	caFile := writeFile(t, "ca.pem", selfSignedPEM(t))
	cfg := mustLoad(t, fmt.Sprintf(siteYAML, caFile), nil)
	e := cfg.NATS.Embedded
	if e.Domain != "site1" || len(e.Leafnodes.Remotes) != 2 {
		t.Fatalf("embedded = %+v", e)
	}
	hub, tlsHub := e.Leafnodes.Remotes[0], e.Leafnodes.Remotes[1]
	urls, err := hub.ParseURLs()
	if err != nil {
		t.Fatal(err)
	}
	if len(urls) != 2 || urls[1].Host != "hub2:7422" {
		t.Fatalf("urls = %v", urls)
	}
	if pass, _ := urls[0].User.Password(); urls[0].User.Username() != "site1" || pass != "Leaf-Secret-1" {
		t.Errorf("the first URL does not carry user and password for nats-server")
	}
	if hub.ClientTLS != nil {
		t.Errorf("TLS configured for a nats-leaf:// remote without tls keys")
	}
	if tlsHub.ClientTLS == nil || tlsHub.ClientTLS.RootCAs == nil {
		t.Errorf("tls remote without its CA: %+v", tlsHub.ClientTLS)
	}

	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%#v", e), string(js)} {
		if f, ok := leaked(out, "Leaf-Secret-1", "Leaf-Token-2"); ok {
			t.Errorf("printed config holds %q: %s", f, out)
		}
	}
	secrets := secretsOf(cfg, lookupIn(nil))
	for _, want := range []string{"Leaf-Secret-1", "Leaf-Token-2"} {
		if !slices.Contains(secrets, want) {
			t.Errorf("secretsOf lacks %q", want)
		}
	}
}

func TestLoad_TopologyProblems(t *testing.T) {
	tests := []struct {
		name, yaml, problem string
	}{
		{"replicas -1", "jetstream: {replicas: -1}", "jetstream.replicas: -1: want 1 to 5"},
		{"replicas 6", "nats: {url: nats://h}\njetstream: {replicas: 6}", "jetstream.replicas: 6: want 1 to 5"},
		{"replicas on the embedded server", "jetstream: {replicas: 3}", "needs a NATS cluster at nats.url"},
		{"domain with an external server", "nats: {url: nats://h, embedded: {domain: d}}\njetstream: {enabled: true}", "nats.url must be empty"},
		{"leafnodes with an external server", "nats: {url: nats://h, embedded: {leafnodes: {remotes: [{url: nats-leaf://hub}]}}}", "nats.url must be empty"},
		{"bad domain", "nats: {embedded: {domain: a.b}}\njetstream: {enabled: true}", `nats.embedded.domain: "a.b" must be`},
		{"domain without JetStream", "nats: {embedded: {domain: d}}", "a JetStream domain needs jetstream.enabled"},
		{"leafnodes and JetStream without a domain", "nats: {embedded: {leafnodes: {remotes: [{url: nats-leaf://hub}]}}}\njetstream: {enabled: true}", "nats.embedded.domain: required with leafnodes"},
		{"remote without url", "nats: {embedded: {leafnodes: {remotes: [{user: u, password: p}]}}}", "remotes[0].url: required"},
		{"empty url entry", "nats: {embedded: {leafnodes: {remotes: [{url: 'nats-leaf://hub,'}]}}}", "remotes[0].url: empty entry"},
		{"bad scheme", "nats: {embedded: {leafnodes: {remotes: [{url: http://hub}]}}}", "scheme must be nats-leaf, nats, tls, ws or wss"},
		{"missing host", "nats: {embedded: {leafnodes: {remotes: [{url: 'nats-leaf://:7422'}]}}}", "missing host"},
		{"user without password", "nats: {embedded: {leafnodes: {remotes: [{url: nats-leaf://hub, user: u}]}}}", "user and password go together"},
		{"user and creds", "nats: {embedded: {leafnodes: {remotes: [{url: nats-leaf://hub, user: u, password: p, creds_file: /nonexistent}]}}}", "set only one of user/password and creds_file"},
		{"unreadable creds", "nats: {embedded: {leafnodes: {remotes: [{url: nats-leaf://hub, creds_file: /nonexistent}]}}}", "remotes[0].creds_file: open /nonexistent"},
		{"credentials twice", "nats: {embedded: {leafnodes: {remotes: [{url: 'nats-leaf://a:b@hub', user: u, password: p}]}}}", "credentials given twice"},
		{"tls half a key pair", "nats: {embedded: {leafnodes: {remotes: [{url: tls://hub, tls: {cert_file: c}}]}}}", "remotes[0].tls: cert_file and key_file go together"},
		{"max_pending with an external server", "nats: {url: nats://h, embedded: {max_pending: 16777216}}", "nats.embedded.max_pending: configures the embedded server; nats.url must be empty"},
		{"max_pending 0", "nats: {embedded: {max_pending: 0}}", "nats.embedded.max_pending: 0 must be at least 1048576 (1 MiB)"},
		{"max_pending negative", "nats: {embedded: {max_pending: -1}}", "nats.embedded.max_pending: -1 must be at least 1048576 (1 MiB)"},
		{"max_pending below max_payload", "nats: {embedded: {max_pending: 1048575}}", "nats.embedded.max_pending: 1048575 must be at least 1048576 (1 MiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, onePBX+tt.yaml+"\n", nil)
			msg := strings.Join(problemsOf(t, err), "\n")
			if !strings.Contains(msg, tt.problem) {
				t.Errorf("no problem %q in:\n%s", tt.problem, msg)
			}
		})
	}
}

// TestLoad_LeafnodeSecretsNeverLeak: a leafnode password or URL secret
// quoted by any problem is masked.
func TestLoad_LeafnodeSecretsNeverLeak(t *testing.T) {
	for _, yaml := range []string{
		`nats: {embedded: {leafnodes: {remotes: [{url: "nats-leaf://u:Leaf\rSecret-3@[bad"}]}}}`,
		`nats: {embedded: {leafnodes: {remotes: [{url: "http://Leaf\rSecret-3@hub"}]}}}`,
		"nats: {embedded: {leafnodes: {remotes: [{url: nats-leaf://hub, user: u, password: \"Leaf\\rSecret-3\"}]}}}\nlog: {level: \"Leaf\\rSecret-3\"}",
	} {
		_, err := load(t, onePBX+yaml+"\n", nil)
		problemsOf(t, err)
		if f, ok := leaked(err.Error(), "Leaf\rSecret-3"); ok {
			t.Errorf("the error holds %q:\n%s", f, err)
		}
	}
}

// TestLoad_EmbeddedMaxPending: 8 MiB by default; any value from the
// server's max_payload up, from the file or the environment.
func TestLoad_EmbeddedMaxPending(t *testing.T) {
	if got := mustLoad(t, onePBX, nil).NATS.Embedded.MaxPending; got != 8<<20 {
		t.Errorf("default max_pending = %d, want 8 MiB", got)
	}
	if got := mustLoad(t, onePBX+"nats: {embedded: {max_pending: 1048576}}\n", nil).NATS.Embedded.MaxPending; got != 1<<20 {
		t.Errorf("max_pending: 1048576 loaded as %d", got)
	}
	env := []string{"AMI_BRIDGE_NATS__EMBEDDED__MAX_PENDING=67108864"}
	if got := mustLoad(t, onePBX, env).NATS.Embedded.MaxPending; got != 64<<20 {
		t.Errorf("max_pending from the environment = %d, want 64 MiB", got)
	}
	// An external server with the key left at its default is fine: the
	// example config writes every key.
	if _, err := load(t, onePBX+"nats: {url: nats://h, embedded: {max_pending: 8388608}}\n", nil); err != nil {
		t.Errorf("the default max_pending with nats.url: %v", err)
	}
}
