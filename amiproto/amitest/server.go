package amitest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// Profile selects the Asterisk generation the server imitates.
type Profile int

// The profiles, each copied from the captures of one live Asterisk build.
const (
	// Asterisk22 is Asterisk 22.10.1 (AMI 11.0.0): Command output comes as
	// "Output:" lines.
	Asterisk22 Profile = iota
	// Asterisk13 is Asterisk 13.38.3 (AMI 2.10.6): Command output comes as
	// a "Response: Follows" block of raw LF lines ended by "--END COMMAND--".
	Asterisk13
)

// String returns the profile's name, such as "asterisk-22".
func (p Profile) String() string {
	if p == Asterisk13 {
		return "asterisk-13"
	}
	return "asterisk-22"
}

// Banner returns the greeting line the profile sends first, without its
// line ending.
func (p Profile) Banner() string { return "Asterisk Call Manager/" + p.AMIVersion() }

// AMIVersion returns the AMI version of the profile: "11.0.0" or "2.10.6".
func (p Profile) AMIVersion() string {
	if p == Asterisk13 {
		return "2.10.6"
	}
	return "11.0.0"
}

// AsteriskVersion returns the Asterisk version of the profile: "22.10.1" or
// "13.38.3".
func (p Profile) AsteriskVersion() string {
	if p == Asterisk13 {
		return "13.38.3"
	}
	return "22.10.1"
}

// User is an AMI account of the fake server.
type User struct {
	Secret string
	// Write grants every action. Without it the user is manager.conf's
	// "write=" (empty): only actions that need no class, such as Ping,
	// Events and ListCommands, are allowed; the others get
	// "Permission denied" and a RequestNotAllowed event.
	Write bool
}

// Config configures a Server. The zero value is a usable Asterisk 22 with
// the user admin / s3cret! of the captures.
type Config struct {
	Profile Profile
	// Users maps user names to accounts. Nil means
	// {"admin": {Secret: "s3cret!", Write: true}}.
	Users map[string]User
	// TLS, when set, makes the server speak TLS, as Asterisk does on 5039.
	TLS *tls.Config
	// Addr is the listen address; "" means "127.0.0.1:0".
	Addr string
	// AuthFailDelay is how long a failed Login waits before its error and
	// the close. Zero means 1 s, as in Asterisk; a negative value means no
	// delay.
	AuthFailDelay time.Duration
	// RequireMD5 refuses a Login that is not a Challenge/MD5 one (AuthType
	// MD5 and a Key): a plain Secret is answered as a wrong one, after
	// AuthFailDelay with "Authentication failed" and a close. Asterisk
	// takes both; this lets a test prove that a client set to MD5 never
	// falls back to sending its secret.
	RequireMD5 bool
	// RecordReceived keeps every byte that clients send, for Received.
	RecordReceived bool
	// AuthTimeout closes, silently, a connection that has not logged in
	// after this long. Zero means 30 s (Asterisk's authtimeout); a negative
	// value disables it.
	AuthTimeout time.Duration
	// WriteTimeout, when positive, drops a session whose socket accepts no
	// bytes for this long, as Asterisk's writetimeout (100 ms) does. Zero
	// means the server waits for slow readers instead: event sources block
	// once a session has MaxQueue bytes waiting.
	WriteTimeout time.Duration
	// MaxQueue bounds the bytes waiting to be written to one session. Zero
	// means 4 MiB.
	MaxQueue int
	// Channels is the number of fake live channels that CoreShowChannels,
	// Status, Getvar, Hangup and "core show channels" see. They come in
	// Local/long@test pairs (;1 and ;2). Tens of thousands are fine.
	Channels int
	// ChannelVars lists manager.conf's channelvars, shown as ChanVariable
	// lines. Nil means FOO and BAR, as in the captures.
	ChannelVars []string
	// AnswerDelay is how long an originated call takes to be answered, or
	// to fail: a synchronous Originate's response, which holds its session
	// as on Asterisk, and an async one's OriginateResponse come that much
	// later. Zero means at once.
	AnswerDelay time.Duration
	// Logf, when set, receives debug lines. Secrets are never logged.
	Logf func(format string, args ...any)
}

// Server is a fake Asterisk Manager Interface on a local port. It is safe
// for concurrent use.
type Server struct {
	cfg      Config
	profile  Profile
	cli      *cliTable
	ln       net.Listener
	started  time.Time
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeErr error
	closed   sync.Once

	mu       sync.Mutex
	sessions map[*session]struct{}
	handlers map[string]Handler // by lower-case action name
	subs     atomic.Pointer[[]*session]

	faults faults
	pbx    pbxState
	tmpl   callTemplates
	live   liveModel
	scen   map[ScenarioKind]*scenarioTmpl

	recMu    sync.Mutex
	received []byte // with Config.RecordReceived
}

// Start listens on cfg.Addr and serves AMI until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Users == nil {
		cfg.Users = map[string]User{"admin": {Secret: "s3cret!", Write: true}}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.AuthFailDelay == 0 {
		cfg.AuthFailDelay = time.Second
	}
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = 30 * time.Second
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 4 << 20
	}
	if cfg.ChannelVars == nil {
		cfg.ChannelVars = []string{"FOO", "BAR"}
	}
	if cfg.Profile != Asterisk22 && cfg.Profile != Asterisk13 {
		return nil, fmt.Errorf("amitest: unknown profile %d", int(cfg.Profile))
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("amitest: listen: %w", err)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	s := &Server{
		cfg:      cfg,
		profile:  cfg.Profile,
		cli:      loadCLI(cfg.Profile),
		ln:       ln,
		started:  time.Now(),
		sessions: map[*session]struct{}{},
		handlers: map[string]Handler{},
	}
	if cfg.RecordReceived {
		s.received = []byte{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.subs.Store(&[]*session{})
	s.pbx.init(s.started)
	s.tmpl.init(cfg.Profile, cfg.ChannelVars)
	s.live.init(s.started)
	s.scen = scenarios(cfg.Profile)
	s.faults.init()
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Profile returns the Asterisk generation the server imitates.
func (s *Server) Profile() Profile { return s.profile }

// URL returns a URL for amiproto.Dial: "tcp://user:secret@host:port", with
// user and secret percent-encoded, and a "tls://" scheme when the server
// speaks TLS. It is Endpoint(user, secret).DialURL().
func (s *Server) URL(user, secret string) string { return s.Endpoint(user, secret).DialURL() }

// Endpoint returns the server's address with user and secret, for
// amiproto.DialEndpoint.
func (s *Server) Endpoint(user, secret string) amiproto.Endpoint {
	return amiproto.Endpoint{TLS: s.cfg.TLS != nil, Addr: s.Addr(), User: user, Secret: secret}
}

// Close stops listening, drops every connection, stops the call
// generators and waits for the server's goroutines to end.
func (s *Server) Close() error {
	s.closed.Do(func() {
		s.mu.Lock()
		s.cancel()
		s.mu.Unlock()
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = fmt.Errorf("amitest: close listener: %w", err)
		}
		s.DropConnections()
		s.wg.Wait()
	})
	return s.closeErr
}

// DropConnections closes every current connection at once, as a crashed
// or restarted PBX would, and keeps listening for new ones.
func (s *Server) DropConnections() {
	for _, ss := range s.allSessions() {
		ss.abort()
	}
}

// Shutdown imitates "core stop now" (captures 12a-12c): sessions whose
// mask takes system events get "Event: Shutdown" (Shutdown: Cleanly,
// Restart: True or False), then every connection is closed once its queued
// bytes are written. The server keeps listening, as a restarted PBX would
// soon again.
func (s *Server) Shutdown(restart bool) {
	r := "False"
	if restart {
		r = "True"
	}
	ev := appendField(nil, "Event", "Shutdown")
	ev = appendField(ev, "Privilege", "system,all")
	ev = appendField(ev, "Shutdown", "Cleanly")
	ev = appendField(ev, "Restart", r)
	s.broadcastOne(append(ev, '\r', '\n'), classSystem)
	for _, ss := range s.allSessions() {
		ss.closeAfterFlush()
	}
}

// Received returns a copy of every byte clients have sent so far, as read
// from the sockets, when Config.RecordReceived is set; nil otherwise. The
// bytes of concurrent sessions are interleaved in read-sized chunks.
func (s *Server) Received() []byte {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if s.received == nil {
		return nil
	}
	return append([]byte{}, s.received...)
}

// recorder is a session's input, recorded into the server's Received.
type recorder struct {
	r   io.Reader
	srv *Server
}

func (r recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.srv.recMu.Lock()
	r.srv.received = append(r.srv.received, p[:n]...)
	r.srv.recMu.Unlock()
	return n, err
}

// Sessions returns the number of logged-in sessions.
func (s *Server) Sessions() int { return len(*s.subs.Load()) }

// Handle installs h as the handler of action (matched case-insensitively),
// replacing the built-in one if any. A nil h removes the action, which then
// answers as unknown. Permissions are checked before h runs: before login
// only Login, Challenge and Logoff reach a handler, and a user without
// write access reaches only the actions Asterisk lists with no privilege.
func (s *Server) Handle(action string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[strings.ToLower(action)] = h
	if h == nil {
		s.handlers[strings.ToLower(action)] = removedHandler{}
	}
}

// HandleFunc is Handle for a function.
func (s *Server) HandleFunc(action string, f func(w *ResponseWriter, r *Request)) {
	s.Handle(action, HandlerFunc(f))
}

// Emit sends ev to every logged-in session whose event mask takes it. The
// event's classes come from its Privilege field ("call,all"); an event
// without one goes to every session with events on. A message that
// amiproto.AppendMessage refuses is logged and dropped.
func (s *Server) Emit(ev *amiproto.Message) {
	b, err := amiproto.AppendMessage(nil, ev)
	if err != nil {
		s.logf("amitest: Emit: %v", err)
		return
	}
	s.broadcastOne(b, eventClasses(ev.Get("Privilege")))
}

// EmitRaw sends b, unchanged, to every logged-in session with events on.
// It is for bytes no Message can hold.
func (s *Server) EmitRaw(b []byte) { s.broadcastOne(b, classAll) }

// EmitRawInline is EmitRaw that writes b to each session on the caller's
// goroutine when nothing waits to be written to it, instead of waking the
// session's writer: the same socket writes, one goroutine wake-up fewer.
// For load tools whose fake PBXes share the cores with what they measure.
// The caller waits for the writes, each at most Config.WriteTimeout when
// set.
func (s *Server) EmitRawInline(b []byte) {
	for _, ss := range *s.subs.Load() {
		if ss.mask.Load()&classAll != 0 && !ss.halfOpen.Load() && !ss.holdEvent(b) && !ss.writeInline(b) {
			ss.enqueue(b)
		}
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.logf("amitest: accept: %v", err)
			}
			return
		}
		if err := s.ServeConn(conn); err != nil {
			return
		}
	}
}

// ServeConn serves one AMI session on conn, as if the listener had
// accepted it: one end of a net.Pipe, say, handed to amiproto.WithDialer.
// It returns at once; the session ends when the client leaves or the server
// closes. conn is spoken to in clear text even when Config.TLS is set.
// After Close it closes conn and returns an error.
func (s *Server) ServeConn(conn net.Conn) error {
	ss := newSession(s, conn)
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		conn.Close()
		return errors.New("amitest: server closed")
	}
	s.sessions[ss] = struct{}{}
	ss.startAuthTimer()
	// Added under s.mu, which Close takes to cancel, so that Close's Wait
	// never misses a session that is starting.
	s.wg.Add(2)
	s.mu.Unlock()
	go ss.readLoop()
	go ss.writeLoop()
	return nil
}

func (s *Server) allSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		out = append(out, ss)
	}
	return out
}

// subscribe adds a logged-in session to the broadcast list, which is
// copied on write so that event fan-out takes no lock.
func (s *Server) subscribe(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.subs.Load()
	for _, x := range old {
		if x == ss {
			return
		}
	}
	next := make([]*session, len(old), len(old)+1)
	copy(next, old)
	next = append(next, ss)
	s.subs.Store(&next)
}

func (s *Server) forget(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
	old := *s.subs.Load()
	next := make([]*session, 0, len(old))
	for _, x := range old {
		if x != ss {
			next = append(next, x)
		}
	}
	s.subs.Store(&next)
}

func (s *Server) handler(action string) (Handler, bool) {
	s.mu.Lock()
	h, ok := s.handlers[strings.ToLower(action)]
	s.mu.Unlock()
	if ok {
		_, removed := h.(removedHandler)
		return h, !removed
	}
	lower := strings.ToLower(action)
	if legacyOnly[lower] && s.profile != Asterisk13 {
		return nil, false
	}
	h, ok = builtins[lower]
	return h, ok
}

// removedHandler marks a built-in action removed by Handle(action, nil).
type removedHandler struct{}

func (removedHandler) ServeAMI(*ResponseWriter, *Request) {}
