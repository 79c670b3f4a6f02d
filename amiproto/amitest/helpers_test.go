package amitest_test

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// ioTimeout bounds every read and write of a test client, so that a
// broken server fails a test instead of hanging it.
const ioTimeout = 10 * time.Second

// start starts a server with a short auth-failure delay and closes it at
// the end of the test.
func start(t testing.TB, cfg amitest.Config) *amitest.Server {
	t.Helper()
	if cfg.AuthFailDelay == 0 {
		cfg.AuthFailDelay = 10 * time.Millisecond
	}
	if cfg.Users == nil {
		cfg.Users = map[string]amitest.User{
			"admin":    {Secret: "s3cret!", Write: true},
			"readonly": {Secret: "ro"},
		}
	}
	srv, err := amitest.Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

// rawClient talks to the server over a bare net.Conn, parsing what comes
// back with amiproto.Reader.
type rawClient struct {
	t      testing.TB
	conn   net.Conn
	rd     *amiproto.Reader
	banner string
}

func dial(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, rd: amiproto.NewReader(conn)}
	conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if c.banner, err = c.rd.ReadBanner(); err != nil {
		t.Fatalf("banner: %v", err)
	}
	return c
}

// writeRaw sends bytes as they are.
func (c *rawClient) writeRaw(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// send writes an action given as key, value pairs after its name.
func (c *rawClient) send(action string, kv ...string) {
	c.t.Helper()
	b, err := amiproto.AppendMessage(nil, amiproto.NewAction(action, kv...))
	if err != nil {
		c.t.Fatalf("AppendMessage: %v", err)
	}
	c.writeRaw(string(b))
}

// read returns the next message.
func (c *rawClient) read() *amiproto.Message {
	c.t.Helper()
	m, err := c.tryRead(ioTimeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *rawClient) tryRead(d time.Duration) (*amiproto.Message, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	return c.rd.ReadMessage()
}

// readResponse skips events up to the next Response.
func (c *rawClient) readResponse() *amiproto.Message {
	c.t.Helper()
	for {
		if m := c.read(); m.Kind() == amiproto.KindResponse {
			return m
		}
	}
}

// readEvent skips messages up to the next event named name.
func (c *rawClient) readEvent(name string) *amiproto.Message {
	c.t.Helper()
	for {
		if m := c.read(); m.EventName() == name {
			return m
		}
	}
}

// expectEOF reads until the server closes the connection and returns what
// came before.
func (c *rawClient) expectEOF() []*amiproto.Message {
	c.t.Helper()
	var got []*amiproto.Message
	for {
		m, err := c.tryRead(ioTimeout)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				c.t.Fatalf("want EOF, got %v", err)
			}
			return got
		}
		got = append(got, m)
	}
}

// login logs in with a plain secret and the given Events value ("" leaves
// it out), and returns the response.
func (c *rawClient) login(user, secret, events string) *amiproto.Message {
	c.t.Helper()
	kv := []string{"Username", user, "Secret", secret, "ActionID", "login"}
	if events != "" {
		kv = append(kv, "Events", events)
	}
	c.send("Login", kv...)
	resp := c.readResponse()
	if resp.Name() != "Success" {
		c.t.Fatalf("login: %s", resp)
	}
	return resp
}

// dialLogin dials and logs in as admin with events off.
func dialLogin(t testing.TB, srv *amitest.Server) *rawClient {
	t.Helper()
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "off")
	return c
}

func md5Key(challenge, secret string) string {
	sum := md5.Sum([]byte(challenge + secret))
	return hex.EncodeToString(sum[:])
}

// keys returns a message's keys in order.
func keys(m *amiproto.Message) []string {
	out := make([]string, len(m.Fields()))
	for i, f := range m.Fields() {
		out[i] = f.Key
	}
	return out
}

// captures is the one copy of the recorded Asterisk sessions, shared with
// the amiproto reader tests.
const captures = "../testdata/captures"

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }
