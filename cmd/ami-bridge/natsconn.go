package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// embeddedReadyTimeout bounds the embedded server's start-up.
const embeddedReadyTimeout = 10 * time.Second

// ErrAddrInUse is returned when the embedded server's listen address is
// taken, most often by another NATS server.
var ErrAddrInUse = errors.New("address already in use")

// embeddedOptions are what the embedded server needs from the config.
type embeddedOptions struct {
	Listen    string // host:port, port 0 for a free one; "" for in-process only
	StoreDir  string
	JetStream bool
	Domain    string // JetStream domain; "" for none
	User      string
	Password  string
	Token     string
	// Service is the user of the service connection (nats.service), nil
	// when none: the server then knows two users, User with every right
	// and Service with servicePermissions.
	Service *server.User
	// MaxPending is the bytes the server queues for one client before it
	// cuts it as a slow consumer; 0 for nats-server's default, 64 MiB.
	MaxPending int64
	// Leafnodes are the hubs the server connects to as a leaf node. Their
	// URLs hold the passwords: they go to nats-server and nowhere else.
	Leafnodes []*server.RemoteLeafOpts
}

func embeddedFromConfig(c *config.Config) (embeddedOptions, error) {
	e := c.NATS.Embedded
	o := embeddedOptions{
		Listen:     e.Listen,
		StoreDir:   e.StoreDir,
		JetStream:  c.JetStream.Enabled || c.State.Enabled, // the state's KV bucket needs it too
		Domain:     e.Domain,
		User:       c.NATS.User,
		Password:   c.NATS.Password.Reveal(),
		Token:      c.NATS.Token.Reveal(),
		MaxPending: int64(e.MaxPending),
	}
	if sv := c.NATS.Service; sv.IsSet() { // config.check: user/password for both
		o.Service = &server.User{Username: sv.User, Password: sv.Password.Reveal(),
			Permissions: servicePermissions(c.NATS.Prefix, c.NATS.ReplyPrefixes)}
	}
	for _, r := range e.Leafnodes.Remotes {
		urls, err := r.ParseURLs()
		if err != nil {
			return o, err
		}
		rl := &server.RemoteLeafOpts{
			URLs:        urls,
			Credentials: r.CredsFile,
			TLS:         r.ClientTLS != nil,
			TLSConfig:   r.ClientTLS,
		}
		if c.JetStream.Enabled {
			// The site's stream listens on every PBX's events: without
			// this, the hub would pass it the other sites' events too, and
			// a hub sourcing every site would hold them twice.
			rl.DenyImports = []string{subjects.AllEvents(c.NATS.Prefix)}
		}
		o.Leafnodes = append(o.Leafnodes, rl)
	}
	return o, nil
}

// servicePermissions are the service user's on the embedded server, as
// docs/security.md gives them to bridge-service: receive the action
// requests (queue and plain) and micro's $SRV requests, publish only to
// requesters' inboxes, never to the bridge's own. micro answers a $SRV
// request on any reply subject; these make NATS refuse all but inboxes.
func servicePermissions(prefix string, replyPrefixes []string) *server.Permissions {
	allow := []string{"_INBOX.>"}
	for _, p := range replyPrefixes {
		allow = append(allow, p+".>")
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: allow, Deny: []string{subjects.InboxPrefix + ".>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{subjects.Action(prefix, "*"), subjects.NamedActions(prefix, "*"), "$SRV.>"}},
	}
}

// embeddedServerName names the embedded server after its domain: the
// servers of one NATS system, hub and leaf nodes, should differ by name.
func embeddedServerName(domain string) string {
	if domain == "" {
		return "ami-bridge"
	}
	return "ami-bridge-" + domain
}

// startEmbedded starts an in-process nats-server and waits until it
// accepts clients.
func startEmbedded(o embeddedOptions, log zerolog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName:      embeddedServerName(o.Domain),
		NoSigs:          true, // the process handles its own signals
		JetStream:       o.JetStream,
		JetStreamDomain: o.Domain,
		StoreDir:        o.StoreDir,
		Username:        o.User,
		Password:        o.Password,
		Authorization:   o.Token,
		Users:           o.users(),
		MaxPending:      o.MaxPending,
		LeafNode:        server.LeafNodeOpts{Remotes: o.Leafnodes},
	}
	if opts.Users != nil {
		opts.Username, opts.Password = "", "" // nats-server takes one or the other
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen %q: %w", o.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen %q: bad port", o.Listen)
		}
		if port == 0 {
			port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
		} else if err := probeListen(o.Listen); err != nil {
			// nats-server only logs a taken port and then never gets ready;
			// finding out first gives a clear error at once.
			return nil, err
		}
		opts.Host, opts.Port = host, port
	}

	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	ns.SetLoggerV2(natsServerLogger{log.With().Str("component", "nats-server").Logger()},
		log.GetLevel() <= zerolog.TraceLevel, false, false)
	ns.Start()
	if !ns.ReadyForConnections(embeddedReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server on %q not ready after %s", o.Listen, embeddedReadyTimeout)
	}
	return ns, nil
}

// users are the embedded server's users when there is a service user:
// the bridge's, with every right, and the service user; nil otherwise.
func (o embeddedOptions) users() []*server.User {
	if o.Service == nil {
		return nil
	}
	return []*server.User{{Username: o.User, Password: o.Password}, o.Service}
}

// probeListen reports whether addr can be listened on right now.
func probeListen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("embedded NATS cannot listen on %s: %w", addr, ErrAddrInUse)
		}
		return fmt.Errorf("embedded NATS cannot listen on %s: %w", addr, err)
	}
	return l.Close()
}

// embeddedURL is how a client outside the process reaches ns, or
// "in-process" when it does not listen.
func embeddedURL(ns *server.Server) string {
	if ns.Addr() == nil {
		return "in-process"
	}
	return ns.ClientURL()
}

// leafnodeWatchInterval is how often watchLeafnodes looks at the links:
// nats-server has no callback for a leafnode connection.
const leafnodeWatchInterval = time.Second

// watchLeafnodes logs every change in the number of ns's leafnode
// connections until ctx ends: whether a site is linked to its hub is
// the first question in a WAN cut.
func watchLeafnodes(ctx context.Context, ns *server.Server, remotes int, log zerolog.Logger) {
	t := time.NewTicker(leafnodeWatchInterval)
	defer t.Stop()
	last := 0
	for {
		if n := ns.NumLeafNodes(); n != last {
			ev := log.Info()
			if n < last {
				ev = log.Warn()
			}
			ev.Int("leafnodes_connected", n).Int("leafnode_remotes", remotes).Msg(leafnodeChange(last, n))
			last = n
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func leafnodeChange(before, now int) string {
	if now > before {
		return "leafnode connected"
	}
	return "leafnode disconnected"
}

// natsServerLogger routes nats-server's log into zerolog. Its notices are
// start-up chatter, so they go to debug; Fatalf must not exit the process.
type natsServerLogger struct{ l zerolog.Logger }

func (n natsServerLogger) Noticef(f string, v ...any) { n.l.Debug().Msgf(f, v...) }
func (n natsServerLogger) Warnf(f string, v ...any)   { n.l.Warn().Msgf(f, v...) }
func (n natsServerLogger) Fatalf(f string, v ...any)  { n.l.Error().Msgf(f, v...) }
func (n natsServerLogger) Errorf(f string, v ...any)  { n.l.Error().Msgf(f, v...) }
func (n natsServerLogger) Debugf(f string, v ...any)  { n.l.Trace().Msgf(f, v...) }
func (n natsServerLogger) Tracef(f string, v ...any)  { n.l.Trace().Msgf(f, v...) }

// A NATS server that stops answering without closing the connection (power
// lost, a link dropped silently) is found out by pings: after
// natsMaxPingsOut unanswered ones, about 10 to 15 s, the connection goes
// to the next URL. nats.go's default, 2 min per ping, would let the event
// buffer (65,536 per PBX, half a minute at 2,000 events/s) overflow first.
const (
	natsPingInterval = 5 * time.Second
	natsMaxPingsOut  = 2
)

// natsConn is a NATS connection and the means to wait for its end.
type natsConn struct {
	*nats.Conn
	closed      chan struct{}          // closed by the ClosedHandler, after Drain
	reconnected atomic.Pointer[func()] // run after each reconnect, once set
}

// onReconnect runs f after every reconnect from now on.
func (nc *natsConn) onReconnect(f func()) { nc.reconnected.Store(&f) }

// natsLogin is how one connection logs in: at most one method set.
type natsLogin struct {
	key          string // the config section, for errors: nats or nats.service
	name         string // the connection's name, as the server lists it
	user         string
	password     string
	token        string
	nkeySeedFile string
	credsFile    string
}

// mainLogin is the login of the main connection (nats.*).
func mainLogin(c config.NATS) natsLogin {
	return natsLogin{key: "nats", name: "ami-bridge", user: c.User, password: c.Password.Reveal(), token: c.Token.Reveal(),
		nkeySeedFile: c.NkeySeedFile, credsFile: c.CredsFile}
}

// serviceLogin is the login of the service connection: nats.service.*,
// or without them the main connection's own (see natsStack.connect).
func serviceLogin(c config.NATS) natsLogin {
	if !c.Service.IsSet() {
		l := mainLogin(c)
		l.name = "ami-bridge-service"
		return l
	}
	s := c.Service
	return natsLogin{key: "nats.service", name: "ami-bridge-service", user: s.User, password: s.Password.Reveal(), token: s.Token.Reveal(),
		nkeySeedFile: s.NkeySeedFile, credsFile: s.CredsFile}
}

// where names url, redacted, and the connection when it is not the main
// one, for errors.
func (l natsLogin) where(url string) string {
	if l.key == "nats" {
		return config.RedactNATSURL(url)
	}
	return config.RedactNATSURL(url) + " (" + l.key + ")"
}

// connectNATS connects to the embedded server ns when it is not nil, else
// to c.URL (with c.TLS), as login, with reconnects forever. When the
// server is not up yet it keeps trying until ctx ends, so the bridge can
// start before NATS.
func connectNATS(ctx context.Context, c config.NATS, login natsLogin, drainTimeout time.Duration, ns *server.Server, log zerolog.Logger) (*natsConn, error) {
	if login.key != "nats" {
		log = log.With().Str("nats_connection", login.key).Logger()
	}
	nc := &natsConn{closed: make(chan struct{})}
	connected := make(chan struct{})
	var once sync.Once
	markConnected := func() { once.Do(func() { close(connected) }) }

	opts := []nats.Option{
		nats.Name(login.name),
		// Its own inbox prefix: the bridge answers no request on it, so a
		// requester cannot aim a reply at its JetStream acks or KV requests.
		// The service connection sends no request, and takes the same.
		nats.CustomInboxPrefix(subjects.InboxPrefix),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(natsPingInterval),
		nats.MaxPingsOutstanding(natsMaxPingsOut),
		nats.IgnoreAuthErrorAbort(), // keep trying: the server may be mid-reload
		nats.DrainTimeout(drainTimeout),
		nats.ConnectHandler(func(*nats.Conn) { markConnected() }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			markConnected()
			log.Info().Str("nats_url", config.RedactNATSURL(c.ConnectedUrlRedacted())).Msg("NATS reconnected")
			if f := nc.reconnected.Load(); f != nil {
				(*f)()
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("NATS disconnected")
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("NATS connect attempt failed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS error")
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(nc.closed) }),
	}
	url := string(c.URL)
	if ns != nil {
		opts = append(opts, nats.InProcessServer(ns))
		url = ns.ClientURL()
	}
	switch {
	case login.user != "":
		opts = append(opts, nats.UserInfo(login.user, login.password))
	case login.token != "":
		opts = append(opts, nats.Token(login.token))
	case login.nkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(login.nkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%s.nkey_seed_file: %w", login.key, err)
		}
		opts = append(opts, o)
	case login.credsFile != "":
		opts = append(opts, nats.UserCredentials(login.credsFile))
	}
	if c.ClientTLS != nil {
		opts = append(opts, nats.Secure(c.ClientTLS))
	}

	conn, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", login.where(url), err)
	}
	nc.Conn = conn
	if conn.IsConnected() {
		markConnected()
	} else {
		log.Warn().Str("nats_url", config.RedactNATSURL(url)).Msg("waiting for NATS")
	}
	select {
	case <-connected:
		return nc, nil
	case <-ctx.Done():
		conn.Close()
		return nil, fmt.Errorf("NATS %s: gave up waiting: %w", login.where(url), ctx.Err())
	}
}

// drain drains the connection and waits until it has closed or ctx ends.
// Drain itself returns at once; the ClosedHandler marks the end.
func (nc *natsConn) drain(ctx context.Context) error {
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		nc.Close()
		return fmt.Errorf("NATS drain: %w", err)
	}
	select {
	case <-nc.closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		<-nc.closed
		return fmt.Errorf("NATS drain: %w", ctx.Err())
	}
}
