// Package httpserver is the operations listener of ami-bridge: /metrics
// in the Prometheus text format, /healthz for liveness and /readyz for
// readiness. It starts before NATS is reached, so that probes get an
// answer while the process waits, and reads the bridge once Attach gives
// it one. No endpoint shows a secret: they show numbers, PBX names and
// states only.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/metrics"
)

// Options configure the listener.
type Options struct {
	Addr string // host:port; port 0 picks a free one
	// ReadyAll makes /readyz need every PBX session up; otherwise one is
	// enough.
	ReadyAll bool
	// StallAfter is how long a non-empty event buffer may go without the
	// publisher moving, NATS being connected, before /healthz fails.
	// Default DefaultStallAfter.
	StallAfter time.Duration
	// SnapshotTimeout bounds the wait for the bridge's stats in /healthz:
	// one that does not come means a lock held for good. Default
	// DefaultSnapshotTimeout.
	SnapshotTimeout time.Duration

	// The listener's bounds against slow or many clients; zero means the
	// default. A connection is cut when its request's header takes longer
	// than ReadHeaderTimeout to arrive, or the whole request (a body it
	// announced and does not send included) longer than ReadTimeout, or
	// writing the answer longer than WriteTimeout, or when it idles
	// between requests for IdleTimeout. MaxHeaderBytes bounds a request's
	// header (net/http allows 4 KiB more). Past MaxConns connections open
	// at once, new ones wait in the kernel's backlog for a free one.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                                            int
	MaxConns                                                  int
}

// Defaults of the zero Options. The endpoints answer in milliseconds
// (/healthz and /readyz wait DefaultSnapshotTimeout at most), and a
// request is a GET with a few headers: a few seconds and a few KiB are
// plenty for a probe or a scrape, and what a slow client may hold.
const (
	DefaultStallAfter        = time.Minute
	DefaultSnapshotTimeout   = 2 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	DefaultMaxHeaderBytes    = 8 << 10
	DefaultMaxConns          = 32 // probes and scrapers: a handful
)

// Server serves the operations endpoints.
type Server struct {
	opts   Options
	ln     net.Listener
	http   *http.Server
	served chan struct{} // closed when Serve has returned

	target atomic.Pointer[target]
	health *liveness
}

type target struct {
	b  metrics.Bridge
	nc metrics.Conn
}

// Start listens on o.Addr and serves until Close.
func Start(o Options, log zerolog.Logger) (*Server, error) {
	if o.StallAfter == 0 {
		o.StallAfter = DefaultStallAfter
	}
	if o.SnapshotTimeout == 0 {
		o.SnapshotTimeout = DefaultSnapshotTimeout
	}
	orDefault(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	orDefault(&o.ReadTimeout, DefaultReadTimeout)
	orDefault(&o.WriteTimeout, DefaultWriteTimeout)
	orDefault(&o.IdleTimeout, DefaultIdleTimeout)
	orDefault(&o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	orDefault(&o.MaxConns, DefaultMaxConns)
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	s := &Server{opts: o, ln: ln, served: make(chan struct{})}
	s.health = newLiveness(o.StallAfter, o.SnapshotTimeout)
	reg := metrics.NewRegistry(s.source)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
	limited := newLimitListener(ln, o.MaxConns)
	// The Server owns the serving goroutine: Start starts it, Close stops
	// it and waits for it.
	go func() {
		defer close(s.served)
		if err := s.http.Serve(limited); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("http listener stopped")
		}
	}()
	return s, nil
}

// Addr returns the address the listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns the base URL of the listener, for people: a wildcard host
// is shown as 127.0.0.1.
func (s *Server) URL() string {
	host, port, _ := net.SplitHostPort(s.Addr())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Attach gives the endpoints the bridge and its NATS connection. Until
// then /healthz answers alive, /readyz not ready, and /metrics has the
// runtime and process metrics only.
func (s *Server) Attach(b metrics.Bridge, nc metrics.Conn) {
	s.target.Store(&target{b: b, nc: nc})
}

func (s *Server) source() (metrics.Bridge, metrics.Conn) {
	t := s.target.Load()
	if t == nil {
		return nil, nil
	}
	return t.b, t.nc
}

// Close stops the listener, lets requests in progress finish until ctx
// ends, and waits for the serving goroutine.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	<-s.served
	s.health.wait(ctx)
	if err != nil {
		return fmt.Errorf("http listener shutdown: %w", err)
	}
	return nil
}

// promLogger routes promhttp's errors into the log.
type promLogger struct{ l zerolog.Logger }

func (p promLogger) Println(v ...any) { p.l.Warn().Msg(fmt.Sprint(v...)) }

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// limitListener lets at most cap(sem) connections be open at once: Accept
// takes a slot before it takes a connection, and the connection's Close
// gives it back, so the connections over the cap wait in the kernel's
// backlog and cost the process nothing. It is what
// golang.org/x/net/netutil.LimitListener does; x/net is not a dependency
// of this module, and these few lines are all of it that would be used.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{} // closed by Close: a waiting Accept returns
	closeOnce sync.Once
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, sem: l.sem}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

// limitConn gives its slot back once, however often it is closed.
type limitConn struct {
	net.Conn
	sem         chan struct{}
	releaseOnce sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.releaseOnce.Do(func() { <-c.sem })
	return err
}
