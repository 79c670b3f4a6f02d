package amiproto

import (
	"errors"
	"net"
	"net/url"
	"strings"
)

// Endpoint is a parsed AMI address.
type Endpoint struct {
	TLS    bool
	Addr   string // host:port
	User   string
	Secret string
}

// String returns the address with its scheme and user but never the secret.
func (e Endpoint) String() string {
	s := "tcp://"
	if e.TLS {
		s = "tls://"
	}
	if e.User != "" {
		s += url.User(e.User).String() + "@"
	}
	return s + e.Addr
}

// DialURL returns the URL that ParseURL turns back into e, secret
// included: "tcp://" or "tls://", then the percent-escaped user and secret,
// then Addr. It is for handing an endpoint to something that takes a URL,
// such as a config file; never log it.
func (e Endpoint) DialURL() string {
	s := "tcp://"
	if e.TLS {
		s = "tls://"
	}
	if e.User != "" || e.Secret != "" {
		s += escapeUserinfo(e.User) + ":" + escapeUserinfo(e.Secret) + "@"
	}
	return s + e.Addr
}

// escapeUserinfo percent-encodes every byte but the unreserved ones, so
// any user or secret survives the URL's ':' and '@' separators and
// ParseURL's decoding.
func escapeUserinfo(v string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// ParseURL parses "host", "host:port", "user:secret@host:port", optionally
// with a "tcp://" or "tls://" scheme. The port defaults to 5038, or 5039
// for tls; user and secret are percent-decoded. Its errors never quote the
// input, which may hold a secret.
func ParseURL(raw string) (Endpoint, error) {
	var ep Endpoint
	rest := raw
	if scheme, after, ok := strings.Cut(raw, "://"); ok {
		switch strings.ToLower(scheme) {
		case "tcp":
		case "tls":
			ep.TLS = true
		default:
			return ep, errors.New("unsupported scheme (want tcp:// or tls://)")
		}
		rest = after
	}
	rest = strings.TrimSuffix(rest, "/")
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		userinfo := rest[:i]
		rest = rest[i+1:]
		user, secret, _ := strings.Cut(userinfo, ":")
		var err error
		if ep.User, err = url.PathUnescape(user); err != nil {
			return ep, errors.New("bad percent-encoding in user")
		}
		if ep.Secret, err = url.PathUnescape(secret); err != nil {
			return ep, errors.New("bad percent-encoding in secret")
		}
	}
	if rest == "" || strings.ContainsAny(rest, "/?#@ ") {
		return ep, errors.New("missing or malformed host")
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		// No port: "host" or "[::1]" or a bare IPv6 literal.
		host, port = strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]"), "5038"
		if ep.TLS {
			port = "5039"
		}
		if strings.Count(rest, ":") == 1 {
			return ep, errors.New("malformed host:port")
		}
	}
	if host == "" {
		return ep, errors.New("missing host")
	}
	if !validPort(port) {
		return ep, errors.New("invalid port")
	}
	ep.Addr = net.JoinHostPort(host, port)
	return ep, nil
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n > 0 && n < 65536
}
