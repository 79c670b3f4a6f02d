package config

import (
	"net"
	"strconv"
	"strings"
)

// HTTP is the operations listener: /metrics, /healthz and /readyz.
type HTTP struct {
	// Listen is where it listens: "" (the default) turns it off; a host
	// alone takes DefaultHTTPPort; an empty host means 127.0.0.1, so
	// every interface must be asked for (0.0.0.0:7038, [::]:7038).
	Listen string `koanf:"listen"`
	// Ready says which PBX sessions /readyz needs up besides NATS:
	// "all" (the default) or "any".
	Ready string `koanf:"ready"`

	// Addr is Listen as host:port, filled by Load; "" when off.
	Addr string `koanf:"-"`
}

// DefaultHTTPPort is the port of http.listen when it names a host only.
// It is outside the Prometheus exporter range 9100–9999, which is fully
// allocated, and clear of NATS (4222, 6222, 7422, 8222), of Asterisk (AMI
// 5038/5039, HTTP and ARI 8088/8089, SIP 5060/5061, IAX2 4569, RTP
// 10000–20000) and below Linux's ephemeral range, so a client socket
// never holds it. 7038 echoes AMI's 5038.
const DefaultHTTPPort = 7038

// DefaultHTTPReady is the default of http.ready.
const DefaultHTTPReady = "all"

func (h *HTTP) check(p *problems) {
	if h.Ready != "any" && h.Ready != "all" {
		p.add("http.ready: %q must be any or all", h.Ready)
	}
	if h.Listen == "" {
		return
	}
	addr, err := HTTPAddr(h.Listen)
	if err != nil {
		p.add("http.listen: %v", err)
		return
	}
	h.Addr = addr
}

// HTTPAddr returns the host:port an http.listen value means: the port
// defaults to DefaultHTTPPort and the host to 127.0.0.1.
func HTTPAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		// A host alone, IPv6 included ("::1" or "[::1]").
		host, port = strings.TrimSuffix(strings.TrimPrefix(listen, "["), "]"), strconv.Itoa(DefaultHTTPPort)
		if strings.ContainsAny(host, "[] /") {
			return "", &listenError{listen}
		}
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if _, err := ParseListen(net.JoinHostPort(host, port)); err != nil {
		return "", &listenError{listen}
	}
	return net.JoinHostPort(host, port), nil
}

type listenError struct{ listen string }

func (e *listenError) Error() string {
	return strconv.Quote(e.listen) + " is not host, host:port or :port"
}
