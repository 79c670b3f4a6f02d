package config

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
)

// Leafnodes makes the embedded server a leaf node: it keeps its own
// clients and JetStream, and links them to each remote (a hub) while the
// link is up. A site then buffers in its own stream through a WAN cut.
type Leafnodes struct {
	Remotes []LeafRemote `koanf:"remotes"`
}

// LeafRemote is one hub (or hub cluster) the embedded server connects to
// as a leaf node.
type LeafRemote struct {
	// URL lists the hub's leafnode URLs, comma-separated, as in
	// nats-leaf://hub1:7422,nats-leaf://hub2:7422. It prints masked.
	URL       NATSURL `koanf:"url"`
	User      string  `koanf:"user"`
	Password  Secret  `koanf:"password"`
	CredsFile string  `koanf:"creds_file"`
	TLS       TLS     `koanf:"tls"`

	// ClientTLS is built from TLS by Load; nil when TLS is unset and no
	// URL is tls://.
	ClientTLS *tls.Config `koanf:"-" json:"-"`
}

// Bounds of nats.embedded.max_pending. The default is 8 MiB, not
// nats-server's 64 MiB: a slow subscriber then holds at most that much of
// the process's memory. nats-server refuses a max_pending below its
// max_payload (1 MiB), since one message must fit.
const (
	DefaultEmbeddedMaxPending = 8 << 20
	MinEmbeddedMaxPending     = 1 << 20
)

// checkTopology checks the keys that say how the bridge's NATS is laid
// out: stream replicas, and the embedded server's domain and leaf nodes.
func (c *Config) checkTopology(p *problems) {
	external := c.NATS.URL != ""
	js := c.JetStream
	if js.Replicas > 1 && !external {
		p.add("jetstream.replicas: %d needs a NATS cluster at nats.url; the embedded server is a single node", js.Replicas)
	}

	e := &c.NATS.Embedded
	remotes := e.Leafnodes.Remotes
	if external {
		if e.Domain != "" || len(remotes) > 0 {
			p.add("nats.embedded: domain and leafnodes configure the embedded server; nats.url must be empty")
		}
		// Only a value other than the default tells that the key was
		// set, as an empty domain does.
		if e.MaxPending != DefaultEmbeddedMaxPending {
			p.add("nats.embedded.max_pending: configures the embedded server; nats.url must be empty (set max_pending on that server)")
		}
		return
	}
	if e.MaxPending < MinEmbeddedMaxPending {
		p.add("nats.embedded.max_pending: %d must be at least %d (1 MiB), the largest message nats-server takes", e.MaxPending, MinEmbeddedMaxPending)
	}
	switch {
	case e.Domain != "" && !streamRE.MatchString(e.Domain):
		p.add("nats.embedded.domain: %q must be without spaces, '.', '*', '>', '/' or '\\'", e.Domain)
	case e.Domain != "" && !js.Enabled:
		p.add("nats.embedded.domain: a JetStream domain needs jetstream.enabled")
	case e.Domain == "" && js.Enabled && len(remotes) > 0:
		p.add("nats.embedded.domain: required with leafnodes and JetStream, so the hub can tell this site's stream from the others (and from its own)")
	}
	for i := range remotes {
		remotes[i].check(p, fmt.Sprintf("nats.embedded.leafnodes.remotes[%d]", i))
	}
}

func (r *LeafRemote) check(p *problems, key string) {
	if r.URL == "" {
		p.add("%s.url: required", key)
	}
	anyTLS := false
	for _, raw := range r.URLs() {
		u, err := url.Parse(raw)
		switch {
		case raw == "":
			p.add("%s.url: empty entry in the list", key)
			continue
		case err != nil:
			// url.Error quotes the URL, which may hold a password.
			p.add("%s.url %s: malformed URL", key, RedactNATSURL(raw))
			continue
		}
		switch u.Scheme {
		case "nats-leaf", "nats":
		case "tls", "wss":
			anyTLS = true
		case "ws":
		default:
			p.add("%s.url %s: scheme must be nats-leaf, nats, tls, ws or wss", key, RedactNATSURL(raw))
		}
		if u.Hostname() == "" {
			p.add("%s.url %s: missing host", key, RedactNATSURL(raw))
		}
		if u.User != nil && (r.User != "" || r.CredsFile != "") {
			p.add("%s: credentials given twice: in the url and in user or creds_file", key)
		}
	}
	if (r.User == "") != (r.Password == "") {
		p.add("%s: user and password go together", key)
	}
	if r.User != "" && r.CredsFile != "" {
		p.add("%s: set only one of user/password and creds_file", key)
	}
	checkReadable(p, key+".creds_file", r.CredsFile)
	if r.TLS.isSet() || anyTLS {
		// An empty ServerName lets nats-server take it from each URL.
		r.ClientTLS = buildTLS(p, key+".tls", r.TLS, "")
	}
}

// URLs returns the remote's URLs, as written, spaces trimmed. Use
// ParseURLs to connect.
func (r LeafRemote) URLs() []string {
	if r.URL == "" {
		return nil
	}
	parts := strings.Split(string(r.URL), ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// ParseURLs returns the remote's URLs with user and password set when the
// user key gives them. The result holds the password: hand it to
// nats-server only, never to a log.
func (r LeafRemote) ParseURLs() ([]*url.URL, error) {
	var out []*url.URL
	for _, raw := range r.URLs() {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, &Error{Problems: []string{"leafnode url " + RedactNATSURL(raw) + ": malformed URL"}}
		}
		if r.User != "" {
			u.User = url.UserPassword(r.User, r.Password.Reveal())
		}
		out = append(out, u)
	}
	return out, nil
}

// secrets lists every leafnode password, in the password keys and in the
// URLs, for masking.
func (l Leafnodes) secrets() []string {
	var out []string
	for _, r := range l.Remotes {
		out = append(out, string(r.Password))
		for _, u := range r.URLs() {
			out = append(out, userinfoSecret(u, true))
		}
	}
	return out
}
