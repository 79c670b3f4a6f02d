package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// streamRE follows nats-server's rules for stream names, which become
// file names and subject tokens.
var streamRE = regexp.MustCompile(`^[^.*>/\\\s]+$`)

// check validates c, fills the derived fields (secrets, endpoints, TLS)
// and records every problem in p.
func (c *Config) check(p *problems, lookupEnv func(string) (string, bool)) {
	c.NATS.check(p)
	c.checkHA(p)
	c.checkTopology(p)
	for i := range c.Servers {
		s := &c.Servers[i]
		s.check(p, serverKey(i, s.Name), lookupEnv)
	}
	// After the servers' own checks, which read their secrets.
	c.checkBridge(p)
	c.Log.check(p)
	c.HTTP.check(p)
	if c.ShutdownTimeout <= 0 {
		p.add("shutdown_timeout: must be positive")
	}
	// The bridge takes 0 as its default; a file that writes 0 means no
	// flushing at all, which cannot work.
	if c.State.FlushInterval == 0 {
		p.add("state.flush_interval: must be positive")
	}
	if c.State.Enabled && c.State.Replicas > 1 && c.NATS.URL == "" {
		p.add("state.replicas: %d needs a NATS cluster at nats.url; the embedded server is a single node", c.State.Replicas)
	}
	c.checkMemoryLimit(p)
}

func (n *NATS) check(p *problems) {
	if n.URL != "" {
		for _, u := range strings.Split(string(n.URL), ",") {
			checkNATSURL(p, strings.TrimSpace(u))
		}
	} else {
		if n.Embedded.Listen != "" {
			if _, err := ParseListen(n.Embedded.Listen); err != nil {
				p.add("nats.embedded.listen: %v", err)
			}
		}
		if n.NkeySeedFile != "" || n.CredsFile != "" {
			p.add("nats: nkey_seed_file and creds_file need an external nats.url; the embedded server takes user/password or token")
		}
		if n.TLS.isSet() {
			p.add("nats.tls: needs an external nats.url; the embedded server does not serve TLS")
		}
	}
	methods := 0
	for _, set := range []bool{n.User != "" || n.Password != "", n.Token != "", n.NkeySeedFile != "", n.CredsFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		p.add("nats: set only one of user/password, token, nkey_seed_file, creds_file")
	}
	if (n.User == "") != (n.Password == "") {
		p.add("nats: user and password go together")
	}
	checkReadable(p, "nats.nkey_seed_file", n.NkeySeedFile)
	checkReadable(p, "nats.creds_file", n.CredsFile)
	n.checkService(p)
	if n.TLS.isSet() {
		// An empty ServerName lets nats.go take it from each server URL.
		n.ClientTLS = buildTLS(p, "nats.tls", n.TLS, "")
	}
}

func checkNATSURL(p *problems, raw string) {
	if raw == "" {
		p.add("nats.url: empty entry in the list")
		return
	}
	withScheme := raw
	if !strings.Contains(raw, "://") {
		withScheme = "nats://" + raw // as nats.go reads it
	}
	u, err := url.Parse(withScheme)
	if err != nil {
		// url.Error quotes the URL, which may hold a password.
		p.add("nats.url %s: malformed URL", RedactNATSURL(raw))
		return
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		p.add("nats.url %s: scheme must be nats, tls, ws or wss", RedactNATSURL(raw))
	}
	if u.Hostname() == "" {
		p.add("nats.url %s: missing host", RedactNATSURL(raw))
	}
}

// ParseListen checks a host:port to listen on and returns the port; 0
// asks for a free one.
func ParseListen(hostport string) (int, error) {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, fmt.Errorf("%q is not host:port", hostport)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("%q: port must be 0 to 65535", hostport)
	}
	return n, nil
}

func (s *Server) check(p *problems, key string, lookupEnv func(string) (string, bool)) {
	var ep amiproto.Endpoint
	if s.URL == "" {
		p.add("%s: url is required", key)
	} else if e, err := amiproto.ParseURL(string(s.URL)); err != nil {
		p.add("%s: url %s: %v", key, s.URL, err)
	} else {
		ep = e
		if ep.User == "" {
			p.add("%s: url %s: has no user, as in tcp://user@host:5038", key, s.URL)
		}
		s.Endpoint = ep.String()
		s.Secret = s.resolveSecret(p, key, Secret(ep.Secret), lookupEnv)
	}

	s.Auth = strings.ToLower(s.Auth)

	if s.TLS.isSet() {
		if s.URL != "" && ep.Addr != "" && !ep.TLS {
			p.add("%s: tls is set but the url is not tls://", key)
		}
		host, _, _ := net.SplitHostPort(ep.Addr)
		s.ClientTLS = buildTLS(p, key+".tls", s.TLS, host)
	}
}

// resolveSecret returns the one secret given by the URL, secret_env or
// secret_file. Its problems name the variable or file, never the value.
func (s *Server) resolveSecret(p *problems, key string, fromURL Secret, lookupEnv func(string) (string, bool)) Secret {
	sources := 0
	for _, set := range []bool{fromURL != "", s.SecretEnv != "", s.SecretFile != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		p.add("%s: no secret: set secret_env or secret_file (or user:secret in the url)", key)
		return ""
	case sources > 1:
		p.add("%s: the secret is given more than once: use one of user:secret in the url, secret_env, secret_file", key)
		return ""
	}

	secret := fromURL
	switch {
	case s.SecretEnv != "":
		v, ok := lookupEnv(s.SecretEnv)
		if !ok {
			p.add("%s: secret_env: environment variable %s is not set", key, s.SecretEnv)
			return ""
		}
		secret = Secret(v)
	case s.SecretFile != "":
		b, err := os.ReadFile(s.SecretFile)
		if err != nil {
			p.add("%s: secret_file: %v", key, pathError(err))
			return ""
		}
		// Files written by editors, echo and Docker secrets end in a newline.
		secret = Secret(strings.TrimRight(string(b), "\r\n"))
	}
	if secret == "" {
		p.add("%s: the secret is empty", key)
	}
	if strings.ContainsAny(string(secret), "\r\n\x00") {
		p.add("%s: the secret holds a CR, LF or NUL, which AMI cannot carry", key)
	}
	return secret
}

func checkReadable(p *problems, key, file string) {
	if file == "" {
		return
	}
	f, err := os.Open(file)
	if err != nil {
		p.add("%s: %v", key, pathError(err))
		return
	}
	f.Close()
}

// pathError keeps an *os.PathError's operation, path and cause, nothing
// read from the file.
func pathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s: %v", pe.Op, pe.Path, pe.Err)
	}
	return err
}

// buildTLS returns the client TLS configuration of t; serverName is the
// default for t.ServerName.
func buildTLS(p *problems, key string, t TLS, serverName string) *tls.Config {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         serverName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // the operator asked for it
	}
	if t.ServerName != "" {
		c.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			p.add("%s.ca_file: %v", key, pathError(err))
		} else {
			c.RootCAs = x509.NewCertPool()
			if !c.RootCAs.AppendCertsFromPEM(pem) {
				p.add("%s.ca_file %s: no PEM certificate in it", key, t.CAFile)
			}
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		p.add("%s: cert_file and key_file go together", key)
	case t.CertFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			p.add("%s: cert_file %s / key_file %s: %v", key, t.CertFile, t.KeyFile, pathError(err))
		} else {
			c.Certificates = []tls.Certificate{cert}
		}
	}
	return c
}

func (l *Log) check(p *problems) {
	switch l.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		p.add("log.level: %q must be trace, debug, info, warn or error", l.Level)
	}
	switch l.Format {
	case "auto", "json", "console":
	default:
		p.add("log.format: %q must be auto, json or console", l.Format)
	}
}

// checkService checks nats.service: one login, as for nats.*, and with
// the embedded server (which then holds both users, see
// cmd/ami-bridge/natsconn.go) user/password for both connections.
func (n *NATS) checkService(p *problems) {
	s := n.Service
	if !s.IsSet() {
		return
	}
	methods := 0
	for _, set := range []bool{s.User != "" || s.Password != "", s.Token != "", s.NkeySeedFile != "", s.CredsFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		p.add("nats.service: set only one of user/password, token, nkey_seed_file, creds_file")
	}
	if (s.User == "") != (s.Password == "") {
		p.add("nats.service: user and password go together")
	}
	checkReadable(p, "nats.service.nkey_seed_file", s.NkeySeedFile)
	checkReadable(p, "nats.service.creds_file", s.CredsFile)
	// nats.go logs in with a URL's own credentials over any option, so
	// the service connection would be the main user's.
	for _, u := range strings.Split(string(n.URL), ",") {
		if _, _, ok := userinfoBounds(strings.TrimSpace(u)); ok {
			p.add("nats.service: nats.url %s holds credentials, which NATS would use for the service connection too; give them as nats.user/password or nats.token", RedactNATSURL(strings.TrimSpace(u)))
			break
		}
	}
	if n.URL == "" {
		if s.User == "" || n.User == "" {
			p.add("nats.service: with the embedded server, both nats.user/password and nats.service.user/password are needed: the server then knows the two users")
		} else if s.User == n.User {
			p.add("nats.service.user: must differ from nats.user")
		}
	} else if s.User != "" && s.User == n.User {
		p.add("nats.service.user: the same user as nats.user gives the service connection the bridge's permissions; use a user that may publish only to inboxes")
	}
}
