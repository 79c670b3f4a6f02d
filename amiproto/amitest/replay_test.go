package amitest_test

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

func startReplay(t *testing.T, start func() (*amitest.Replayer, error)) *amitest.Replayer {
	t.Helper()
	r, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func readToEOF(t *testing.T, addr string, send []byte) []byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if len(send) > 0 {
		if _, err := conn.Write(send); err != nil {
			t.Fatal(err)
		}
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestLoadCapture_ChunksJoinToRecv(t *testing.T) {
	c, err := amitest.LoadCapture(filepath.Join(captures, "asterisk-22", "05_command_action.recv.bin"))
	if err != nil {
		t.Fatal(err)
	}
	chunks := c.RecvChunks()
	if len(chunks) < 10 || !bytes.Equal(bytes.Join(chunks, nil), c.Recv) || len(c.Sent) == 0 {
		t.Fatalf("%d chunks, %d recv bytes, %d sent bytes", len(chunks), len(c.Recv), len(c.Sent))
	}
	if _, err := amitest.LoadCapture(filepath.Join(captures, "nope")); err == nil {
		t.Fatal("loaded a missing capture")
	}
}

func TestReplay_ServesTheBytes(t *testing.T) {
	recv := readFile(t, filepath.Join(captures, "asterisk-13", "05_command_action.recv.bin"))
	for _, tc := range []struct {
		name  string
		start func() (*amitest.Replayer, error)
	}{
		{"whole", func() (*amitest.Replayer, error) { return amitest.Replay(recv, amitest.ReplayOptions{}) }},
		{"split", func() (*amitest.Replayer, error) {
			return amitest.Replay(recv, amitest.ReplayOptions{Split: []int{1, 2, 3, 100, 7}})
		}},
		{"recorded chunks", func() (*amitest.Replayer, error) {
			return amitest.StartReplay(filepath.Join(captures, "asterisk-13", "05_command_action"), amitest.ReplayOptions{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startReplay(t, tc.start)
			for range 2 { // every connection gets the whole recording
				if got := readToEOF(t, r.Addr(), nil); !bytes.Equal(got, recv) {
					t.Fatalf("got %d bytes, want the %d recorded", len(got), len(recv))
				}
			}
		})
	}
}

// TestReplay_InteractiveFollowsTheClient checks that an interactive replay
// sends what Asterisk sent after each client write only once the client
// has written as many messages.
func TestReplay_InteractiveFollowsTheClient(t *testing.T) {
	path := filepath.Join(captures, "asterisk-22", "01_login_logoff")
	r := startReplay(t, func() (*amitest.Replayer, error) {
		return amitest.StartReplay(path, amitest.ReplayOptions{Interactive: true})
	})
	conn, err := net.DialTimeout("tcp", r.Addr(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := amiproto.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if banner, err := rd.ReadBanner(); err != nil || banner != "Asterisk Call Manager/11.0.0" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if m, err := rd.ReadMessage(); err == nil {
		t.Fatalf("replay did not wait for the login:\n%s", m)
	}
	// A timed-out read may leave the Reader mid-line; start a fresh one,
	// as nothing had arrived.
	rd = amiproto.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(ioTimeout))
	io.WriteString(conn, "Action: Login\r\nUsername: x\r\nSecret: y\r\n\r\n")
	if m, err := rd.ReadMessage(); err != nil || m.Get("Message") != "Authentication accepted" {
		t.Fatalf("after login: %v %v", m, err)
	}
}

func TestReplay_KeepOpenWaitsForTheClient(t *testing.T) {
	recv := []byte("Asterisk Call Manager/11.0.0\r\n")
	r := startReplay(t, func() (*amitest.Replayer, error) {
		return amitest.Replay(recv, amitest.ReplayOptions{KeepOpen: true})
	})
	conn, err := net.DialTimeout("tcp", r.Addr(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make([]byte, len(recv))
	conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, recv) {
		t.Fatalf("got %q, %v", got, err)
	}
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := conn.Read(got); !isTimeout(err) {
		t.Fatalf("want the connection kept open, read gave %v", err)
	}
}
