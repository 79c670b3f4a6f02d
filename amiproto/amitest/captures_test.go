package amitest_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// volatileKeys hold values that differ between two runs of the same
// session on a real Asterisk as well: clocks, ids, ports, counters.
var volatileKeys = map[string]bool{
	"timestamp": true, "uptime": true, "lastreload": true, "eventtv": true, "sessiontv": true,
	"sessionid": true, "localaddress": true, "remoteaddress": true, "challenge": true,
	"corestartupdate": true, "corestartuptime": true, "corereloaddate": true, "corereloadtime": true,
	"coreprocessedcalls": true, "logintime": true,
}

func isVolatile(f amiproto.Field) bool {
	if volatileKeys[strings.ToLower(f.Key)] {
		return true
	}
	return f.Key == "Output" && (strings.HasPrefix(f.Value, "System uptime:") || strings.HasPrefix(f.Value, "Last reload:"))
}

// readAll parses a banner and messages up to EOF.
func readAll(r io.Reader) (string, []*amiproto.Message, error) {
	rd := amiproto.NewReader(r)
	banner, err := rd.ReadBanner()
	if err != nil {
		return "", nil, fmt.Errorf("banner: %w", err)
	}
	var msgs []*amiproto.Message
	for {
		m, err := rd.ReadMessage()
		if errors.Is(err, io.EOF) {
			return banner, msgs, nil
		}
		if err != nil {
			return banner, msgs, fmt.Errorf("message %d: %w", len(msgs)+1, err)
		}
		msgs = append(msgs, m)
	}
}

// TestCaptures_SameConversation sends each recorded client byte stream to
// the fake and checks that it answers with the messages Asterisk sent:
// the same kinds, keys in the same order, and the same values but for
// clocks and ids.
func TestCaptures_SameConversation(t *testing.T) {
	sessions := []string{
		"01_login_logoff",
		"02a_login_wrong_secret",
		"02b_login_unknown_user",
		"02c_action_before_login",
		"03b_challenge_md5_wrong_key",
		"04_ping_coresettings_corestatus_listcommands",
		"05_command_action",
		"08_pipelined_actions",
		"10a_unknown_and_odd_actions",
		"10b_readonly_user_write_denied",
		"11a_line_without_colon",
		"11b_garbage_bytes",
		"11c_100KB_line",
		"11f_too_many_headers",
	}
	profiles := []struct {
		dir     string
		profile amitest.Profile
	}{{"asterisk-22", amitest.Asterisk22}, {"asterisk-13", amitest.Asterisk13}}
	for _, p := range profiles {
		for _, name := range sessions {
			t.Run(p.dir+"/"+name, func(t *testing.T) {
				t.Parallel()
				base := filepath.Join(captures, p.dir, name)
				wantBanner, want, err := readAll(bytes.NewReader(readFile(t, base+".recv.bin")))
				if err != nil {
					t.Fatalf("capture: %v", err)
				}
				srv := start(t, amitest.Config{Profile: p.profile})
				c := dial(t, srv.Addr())
				if c.banner != wantBanner {
					t.Errorf("banner %q, want %q", c.banner, wantBanner)
				}
				c.writeRaw(string(readFile(t, base+".sent.bin")))
				got := c.expectEOF()
				compareConversation(t, got, want)
			})
		}
	}
}

func compareConversation(t *testing.T, got, want []*amiproto.Message) {
	t.Helper()
	for i := range max(len(got), len(want)) {
		if i >= len(got) {
			t.Fatalf("message %d missing, want:\n%s", i+1, want[i])
		}
		if i >= len(want) {
			t.Fatalf("message %d extra:\n%s", i+1, got[i])
		}
		g, w := got[i], want[i]
		if len(g.Fields()) != len(w.Fields()) {
			t.Fatalf("message %d has %d fields, want %d\ngot:\n%s\nwant:\n%s", i+1, len(g.Fields()), len(w.Fields()), g, w)
		}
		for j, wf := range w.Fields() {
			gf := g.Fields()[j]
			if gf.Key != wf.Key || (gf.Value != wf.Value && !isVolatile(wf)) {
				t.Fatalf("message %d field %d = %q: %q, want %q: %q\ngot:\n%s\nwant:\n%s", i+1, j+1, gf.Key, gf.Value, wf.Key, wf.Value, g, w)
			}
		}
	}
}
