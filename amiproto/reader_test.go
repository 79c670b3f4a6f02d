package amiproto_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// The banners of the two Asterisk generations in testdata/captures.
const (
	banner22 = "Asterisk Call Manager/11.0.0"
	banner13 = "Asterisk Call Manager/2.10.6"
)

// loadRecv returns the bytes Asterisk sent in capture name of version ver
// ("asterisk-22" or "asterisk-13"). The 14b observer captures and 14c
// are stored gzipped to keep testdata small.
func loadRecv(t testing.TB, ver, name string) []byte {
	t.Helper()
	path := filepath.Join("testdata", "captures", ver, name+".recv.bin")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		data, err = readGzip(path + ".gz")
	}
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func readGzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// recvChunks splits data as Asterisk's TCP segments delivered it, from the
// "recv" entries of the capture's .chunks.jsonl, or returns nil when the
// capture has no chunk log.
func recvChunks(t testing.TB, ver, name string, data []byte) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "captures", ver, name+".chunks.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var chunks [][]byte
	off := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Dir string `json:"dir"`
			Len int    `json:"len"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Dir != "recv" {
			continue
		}
		if off+e.Len > len(data) {
			t.Fatalf("chunk log of %s/%s runs past its %d recv bytes", ver, name, len(data))
		}
		chunks = append(chunks, data[off:off+e.Len])
		off += e.Len
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if off != len(data) {
		t.Fatalf("chunk log of %s/%s covers %d of %d recv bytes", ver, name, off, len(data))
	}
	return chunks
}

// chunkReader returns one recorded TCP segment per Read, as the socket did.
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

// replayAll reads the banner and then every message up to a clean EOF.
func replayAll(t testing.TB, r *amiproto.Reader) (string, []*amiproto.Message) {
	t.Helper()
	banner, err := r.ReadBanner()
	if err != nil {
		t.Fatalf("ReadBanner: %v", err)
	}
	return banner, readAll(t, r)
}

// readAll reads every message up to a clean EOF.
func readAll(t testing.TB, r *amiproto.Reader) []*amiproto.Message {
	t.Helper()
	var msgs []*amiproto.Message
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return msgs
		}
		if err != nil {
			t.Fatalf("ReadMessage after %d messages: %v", len(msgs), err)
		}
		msgs = append(msgs, m)
	}
}

// replay is one capture read through the Reader.
type replay struct {
	ver  string
	raw  []byte
	msgs []*amiproto.Message
}

func (rp *replay) is22() bool { return rp.ver == "asterisk-22" }

// find returns the first message that matches, failing the test when none
// does.
func (rp *replay) find(t *testing.T, what string, match func(*amiproto.Message) bool) *amiproto.Message {
	t.Helper()
	if i := slices.IndexFunc(rp.msgs, match); i >= 0 {
		return rp.msgs[i]
	}
	t.Fatalf("no message %s", what)
	return nil
}

// response returns the Response with ActionID id.
func (rp *replay) response(t *testing.T, id string) *amiproto.Message {
	t.Helper()
	return rp.find(t, "Response with ActionID "+id, func(m *amiproto.Message) bool {
		return m.Kind() == amiproto.KindResponse && m.ActionID() == id
	})
}

// events returns the events named name.
func (rp *replay) events(name string) []*amiproto.Message {
	var out []*amiproto.Message
	for _, m := range rp.msgs {
		if m.EventName() == name {
			out = append(out, m)
		}
	}
	return out
}

// next returns the message right after m.
func (rp *replay) next(t *testing.T, m *amiproto.Message) *amiproto.Message {
	t.Helper()
	i := slices.Index(rp.msgs, m)
	if i < 0 || i+1 >= len(rp.msgs) {
		t.Fatalf("no message after %q", m.Name())
	}
	return rp.msgs[i+1]
}

func wantGet(t *testing.T, m *amiproto.Message, key, want string) {
	t.Helper()
	if got, ok := m.Lookup(key); !ok || got != want {
		t.Errorf("%s %q: %s = %q (present %v), want %q", m.Kind(), m.Name(), key, got, ok, want)
	}
}

func wantOutput(t *testing.T, m *amiproto.Message, want string) {
	t.Helper()
	got, ok := m.Output()
	if !ok || got != want {
		t.Errorf("%s %q (ActionID %q): Output() = %q, %v; want %q", m.Kind(), m.Name(), m.ActionID(), got, ok, want)
	}
}

// replayCases lists every capture in testdata/captures. The counts were not
// taken from this Reader: they come from counting the CRLF blank-line
// terminators in the captures' human-readable .txt transcripts (lines
// ending in a bare \n, the legacy Command output, do not end a message) and,
// for the 14 burst captures, which have no transcript, from the same count
// over the raw bytes, checked against 14_burst_200_stats.json (4,400 events
// and 200 responses, plus the login response, its two events and Logoff).
var replayCases = []struct {
	ver, name                        string
	msgs, events, responses, unknown int
	check                            func(t *testing.T, rp *replay)
}{
	{"asterisk-22", "01_login_logoff", 4, 2, 2, 0, checkLoginLogoff},
	{"asterisk-22", "02a_login_wrong_secret", 1, 0, 1, 0, checkAuthFailed},
	{"asterisk-22", "02b_login_unknown_user", 1, 0, 1, 0, checkAuthFailed},
	{"asterisk-22", "02c_action_before_login", 7, 2, 5, 0, checkActionBeforeLogin},
	{"asterisk-22", "03_challenge_md5_login", 5, 2, 3, 0, checkChallenge},
	{"asterisk-22", "03b_challenge_md5_wrong_key", 3, 0, 3, 0, nil},
	{"asterisk-22", "04_ping_coresettings_corestatus_listcommands", 7, 0, 7, 0, checkPingAndListCommands},
	{"asterisk-22", "05_command_action", 11, 0, 11, 0, checkCommand},
	{"asterisk-22", "05b_command_empty_and_concise_output", 8, 0, 8, 0, checkCommandEmptyAndConcise},
	{"asterisk-22", "06a_coreshowchannels_empty", 8, 3, 5, 0, checkEmptyLists},
	{"asterisk-22", "06b_setup_originate_long_channels", 215, 208, 7, 0, nil},
	{"asterisk-22", "06c_collections_with_channels", 176, 144, 32, 0, checkCollections},
	{"asterisk-22", "07a_originate_async_echo", 31, 28, 3, 0, checkOriginateAsync},
	{"asterisk-22", "07b_originate_vars_userevent_getvar_setvar", 52, 41, 11, 0, checkVarsAndUserEvent},
	{"asterisk-22", "07d_originate_failures_sync", 93, 84, 9, 0, checkOriginateFailures},
	{"asterisk-22", "08_pipelined_actions", 59, 0, 59, 0, checkPipelined},
	{"asterisk-22", "08b_pipelined_with_events", 93, 68, 25, 0, nil},
	{"asterisk-22", "09_events_action_eventmask", 64, 40, 24, 0, checkEventsAction},
	{"asterisk-22", "10a_unknown_and_odd_actions", 20, 0, 20, 0, checkOddActions},
	{"asterisk-22", "10b_readonly_user_write_denied", 21, 10, 11, 0, nil},
	{"asterisk-22", "11a_line_without_colon", 5, 0, 5, 0, checkRecovered("nocolon-1", "after-junk")},
	{"asterisk-22", "11b_garbage_bytes", 4, 0, 4, 0, checkRecovered("after-garbage")},
	{"asterisk-22", "11c_100KB_line", 4, 0, 4, 0, checkLineTooLong(1, "after-100k")},
	{"asterisk-22", "11d_100KB_line_unauthenticated", 3, 0, 3, 0, checkLineTooLong(1, "login-after-100k")},
	{"asterisk-22", "11f_too_many_headers", 4, 0, 4, 0, checkTooManyHeaders},
	{"asterisk-22", "11g_idle_unauthenticated_authtimeout", 0, 0, 0, 0, nil},
	{"asterisk-22", "12a_shutdown_core_stop_now_events_on", 30, 28, 2, 0, checkShutdownEvent},
	{"asterisk-22", "12b_shutdown_core_stop_now_events_off", 1, 0, 1, 0, nil},
	{"asterisk-22", "12c_shutdown_core_stop_now_unauthenticated", 0, 0, 0, 0, nil},
	{"asterisk-22", "13_tls_login", 5, 2, 3, 0, checkLoginLogoff},
	{"asterisk-22", "14a_burst_200_originates", 4604, 4402, 202, 0, checkBurst(1)},
	{"asterisk-22", "14b_burst_200_observer", 4405, 4403, 2, 0, checkBurst(2)},
	// The same burst recorded with its timing (.chunks.jsonl).
	{"asterisk-22", "14c_burst_200_timed_originates", 4604, 4402, 202, 0, checkBurst(1)},
	{"asterisk-22", "14d_burst_200_timed_observer", 4405, 4403, 2, 0, checkBurst(2)},
	{"asterisk-22", "15_reload_modulecheck", 14, 5, 9, 0, checkReload},
	// Recorded from the Login on, without the banner (noBanner).
	{"asterisk-22", "18_two_sessions_same_user_a", 2105, 2104, 0, 1, nil},
	{"asterisk-22", "18_two_sessions_same_user_b", 2104, 2103, 0, 1, nil},
	// Issue 19 (captures19_test.go checks their calls, Cdrs and lists).
	{"asterisk-22", "19a_local_pair_driver", 3, 0, 3, 0, nil},
	{"asterisk-22", "19a_local_pair_observer", 123, 114, 9, 0, nil},
	{"asterisk-22", "19b_queue_agent_driver", 5, 0, 5, 0, nil},
	{"asterisk-22", "19b_queue_agent_observer", 208, 193, 15, 0, nil},
	{"asterisk-22", "19c_blind_transfer_driver", 4, 0, 4, 0, nil},
	{"asterisk-22", "19c_blind_transfer_observer", 93, 91, 2, 0, nil},
	{"asterisk-22", "19d_busy_driver", 3, 0, 3, 0, nil},
	{"asterisk-22", "19d_busy_observer", 65, 63, 2, 0, nil},
	{"asterisk-22", "19e_noanswer_driver", 3, 0, 3, 0, nil},
	{"asterisk-22", "19e_noanswer_observer", 64, 62, 2, 0, nil},
	{"asterisk-22", "19f_originate_busy_driver", 3, 0, 3, 0, nil},
	{"asterisk-22", "19f_originate_busy_observer", 28, 26, 2, 0, nil},
	{"asterisk-22", "19g_dial_failed_driver", 3, 0, 3, 0, nil},
	{"asterisk-22", "19g_dial_failed_observer", 55, 53, 2, 0, nil},
	{"asterisk-22", "19h_queue_abandon_driver", 6, 0, 6, 0, nil},
	{"asterisk-22", "19h_queue_abandon_observer", 107, 105, 2, 0, nil},
	{"asterisk-22", "19i_attended_transfer_driver", 5, 0, 5, 0, nil},
	{"asterisk-22", "19i_attended_transfer_observer", 147, 145, 2, 0, nil},

	{"asterisk-13", "01_login_logoff", 4, 2, 2, 0, checkLoginLogoff},
	{"asterisk-13", "02a_login_wrong_secret", 1, 0, 1, 0, checkAuthFailed},
	{"asterisk-13", "02b_login_unknown_user", 1, 0, 1, 0, checkAuthFailed},
	{"asterisk-13", "02c_action_before_login", 7, 2, 5, 0, checkActionBeforeLogin},
	{"asterisk-13", "03_challenge_md5_login", 5, 2, 3, 0, checkChallenge},
	{"asterisk-13", "03b_challenge_md5_wrong_key", 3, 0, 3, 0, nil},
	{"asterisk-13", "04_ping_coresettings_corestatus_listcommands", 7, 0, 7, 0, checkPingAndListCommands},
	{"asterisk-13", "05_command_action", 11, 0, 11, 0, checkCommand},
	{"asterisk-13", "05b_command_empty_and_concise_output", 8, 0, 8, 0, checkCommandEmptyAndConcise},
	{"asterisk-13", "05c_command_more_outputs", 24, 0, 24, 0, checkLegacyOutputs},
	{"asterisk-13", "06a_coreshowchannels_empty", 8, 3, 5, 0, checkEmptyLists},
	{"asterisk-13", "06b_setup_originate_long_channels", 202, 195, 7, 0, nil},
	{"asterisk-13", "06c_collections_with_channels", 161, 129, 31, 1, checkCollections},
	{"asterisk-13", "07a_originate_async_echo", 31, 28, 3, 0, checkOriginateAsync},
	{"asterisk-13", "07b_originate_vars_userevent_getvar_setvar", 52, 41, 11, 0, checkVarsAndUserEvent},
	{"asterisk-13", "07d_originate_failures_sync", 94, 85, 9, 0, checkOriginateFailures},
	{"asterisk-13", "08_pipelined_actions", 59, 0, 59, 0, checkPipelined},
	{"asterisk-13", "08b_pipelined_with_events", 93, 68, 25, 0, nil},
	{"asterisk-13", "09_events_action_eventmask", 67, 43, 24, 0, checkEventsAction},
	{"asterisk-13", "10a_unknown_and_odd_actions", 20, 0, 20, 0, checkOddActions},
	{"asterisk-13", "10b_readonly_user_write_denied", 21, 10, 11, 0, nil},
	{"asterisk-13", "11a_line_without_colon", 5, 0, 5, 0, checkRecovered("nocolon-1", "after-junk")},
	{"asterisk-13", "11b_garbage_bytes", 4, 0, 4, 0, checkRecovered("after-garbage")},
	{"asterisk-13", "11c_100KB_line", 4, 0, 4, 0, checkLineTooLong(1, "after-100k")},
	{"asterisk-13", "11d_100KB_line_unauthenticated", 4, 0, 4, 0, checkLineTooLong(2, "login-after-100k")},
	{"asterisk-13", "11f_too_many_headers", 4, 0, 4, 0, checkTooManyHeaders},
	{"asterisk-13", "11g_idle_unauthenticated_authtimeout", 0, 0, 0, 0, nil},
	{"asterisk-13", "12a_shutdown_core_stop_now_events_on", 30, 28, 2, 0, checkShutdownEvent},
	{"asterisk-13", "12b_shutdown_core_stop_now_events_off", 1, 0, 1, 0, nil},
	{"asterisk-13", "12c_shutdown_core_stop_now_unauthenticated", 0, 0, 0, 0, nil},
	{"asterisk-13", "13_tls_login", 5, 2, 3, 0, checkLoginLogoff},
	{"asterisk-13", "14a_burst_200_originates", 4613, 4411, 202, 0, checkBurst(1)},
	{"asterisk-13", "14b_burst_200_observer", 4414, 4412, 2, 0, checkBurst(2)},
	{"asterisk-13", "19a_local_pair_driver", 3, 0, 3, 0, nil},
	{"asterisk-13", "19a_local_pair_observer", 122, 113, 9, 0, nil},
	{"asterisk-13", "19b_queue_agent_driver", 5, 0, 5, 0, nil},
	{"asterisk-13", "19b_queue_agent_observer", 194, 179, 15, 0, nil},
	{"asterisk-13", "19c_blind_transfer_driver", 4, 0, 4, 0, nil},
	{"asterisk-13", "19c_blind_transfer_observer", 92, 90, 2, 0, nil},
	{"asterisk-13", "19d_busy_driver", 3, 0, 3, 0, nil},
	{"asterisk-13", "19d_busy_observer", 68, 66, 2, 0, nil},
	{"asterisk-13", "19e_noanswer_driver", 3, 0, 3, 0, nil},
	{"asterisk-13", "19e_noanswer_observer", 64, 62, 2, 0, nil},
	{"asterisk-13", "19f_originate_busy_driver", 3, 0, 3, 0, nil},
	{"asterisk-13", "19f_originate_busy_observer", 29, 27, 2, 0, nil},
	{"asterisk-13", "19g_dial_failed_driver", 3, 0, 3, 0, nil},
	{"asterisk-13", "19g_dial_failed_observer", 55, 53, 2, 0, nil},
	{"asterisk-13", "19h_queue_abandon_driver", 6, 0, 6, 0, nil},
	{"asterisk-13", "19h_queue_abandon_observer", 93, 91, 2, 0, nil},
	{"asterisk-13", "19i_attended_transfer_driver", 5, 0, 5, 0, nil},
	{"asterisk-13", "19i_attended_transfer_observer", 144, 142, 2, 0, nil},
}

// smallCapture is the size below which a replay also runs one byte per Read.
const smallCapture = 20 << 10

// noBanner lists the captures recorded from the Login response on: the
// Reader takes that response's first line for the banner, and the rest of
// it reads as one message of no kind.
var noBanner = map[string]bool{"18_two_sessions_same_user_a": true, "18_two_sessions_same_user_b": true}

func TestReader_Replay(t *testing.T) {
	for _, tc := range replayCases {
		t.Run(tc.ver+"/"+tc.name, func(t *testing.T) {
			raw := loadRecv(t, tc.ver, tc.name)
			banner, msgs := replayAll(t, amiproto.NewReader(bytes.NewReader(raw)))
			rp := &replay{ver: tc.ver, raw: raw, msgs: msgs}

			want := banner22
			if tc.ver == "asterisk-13" {
				want = banner13
			}
			if noBanner[tc.name] {
				want = "Response: Success"
			}
			if banner != want {
				t.Errorf("banner = %q, want %q", banner, want)
			}
			var events, responses, unknown int
			for _, m := range msgs {
				switch m.Kind() {
				case amiproto.KindEvent:
					events++
				case amiproto.KindResponse:
					responses++
				case amiproto.KindUnknown:
					unknown++
				}
			}
			if len(msgs) != tc.msgs || events != tc.events || responses != tc.responses || unknown != tc.unknown {
				t.Errorf("got %d messages (%d events, %d responses, %d unknown), want %d (%d, %d, %d)",
					len(msgs), events, responses, unknown, tc.msgs, tc.events, tc.responses, tc.unknown)
			}
			checkReencodes(t, rp)
			checkLegacyBlocks(t, rp)
			if tc.check != nil {
				tc.check(t, rp)
			}

			splits := map[string]func() io.Reader{
				"last-read-with-EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(raw)) },
				"half-reads":         func() io.Reader { return iotest.HalfReader(bytes.NewReader(raw)) },
			}
			if chunks := recvChunks(t, tc.ver, tc.name, raw); chunks != nil {
				splits["tcp-chunks"] = func() io.Reader {
					return &chunkReader{chunks: slices.Clone(chunks)}
				}
			}
			if len(raw) < smallCapture {
				splits["one-byte"] = func() io.Reader { return iotest.OneByteReader(bytes.NewReader(raw)) }
			}
			for name, src := range splits {
				gotBanner, got := replayAll(t, amiproto.NewReader(src()))
				if gotBanner != banner || !sameMessages(got, msgs) {
					t.Errorf("%s: replay differs from the whole-buffer one", name)
				}
			}
		})
	}
}

// TestReader_ReplayCoversEveryCapture keeps the table honest: a capture
// added to testdata must get a row.
func TestReader_ReplayCoversEveryCapture(t *testing.T) {
	rows := map[string]bool{}
	for _, tc := range replayCases {
		rows[tc.ver+"/"+tc.name] = true
	}
	for _, ver := range []string{"asterisk-22", "asterisk-13"} {
		files, err := filepath.Glob(filepath.Join("testdata", "captures", ver, "*.recv.bin*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("no captures in testdata/captures/%s", ver)
		}
		for _, f := range files {
			name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".gz"), ".recv.bin")
			if !rows[ver+"/"+name] {
				t.Errorf("capture %s/%s has no row in replayCases", ver, name)
			}
			delete(rows, ver+"/"+name)
		}
	}
	for row := range rows {
		t.Errorf("row %s has no capture", row)
	}
}

func sameMessages(a, b []*amiproto.Message) bool {
	return slices.EqualFunc(a, b, func(x, y *amiproto.Message) bool { return slices.Equal(x.Fields(), y.Fields()) })
}

// checkReencodes proves that no byte was lost or misread: written back in
// the framing it came in, every message reproduces the capture byte for
// byte. The 13 raw "Queues" text, which is no AMI message, is skipped up to
// its blank line; checkCollections looks at it.
func checkReencodes(t *testing.T, rp *replay) {
	t.Helper()
	pos := bytes.IndexByte(rp.raw, '\n') + 1 // after the banner
	for i, m := range rp.msgs {
		for bytes.HasPrefix(rp.raw[pos:], []byte("\r\n")) {
			pos += 2 // extra blank lines between messages
		}
		if m.Kind() == amiproto.KindUnknown {
			pos += bytes.Index(rp.raw[pos:], []byte("\r\n\r\n")) + 4
			continue
		}
		w := wireForm(m)
		if !bytes.HasPrefix(rp.raw[pos:], []byte(w)) {
			t.Fatalf("message %d does not re-encode to the capture:\n got %.300q\nwant %.300q", i, w, rp.raw[pos:])
		}
		pos += len(w)
	}
	if rest := bytes.Trim(rp.raw[pos:], "\r\n"); len(rest) > 0 {
		t.Fatalf("%d bytes after the last message: %.100q", len(rest), rest)
	}
}

// wireForm renders m the way Asterisk sent it: "Key: value" lines, or for a
// legacy "Response: Follows" its headers, the raw output lines ending in a
// bare LF, and the "--END COMMAND--" marker.
func wireForm(m *amiproto.Message) string {
	if m.Kind() != amiproto.KindResponse || m.Name() != "Follows" {
		return m.String()
	}
	var b strings.Builder
	for _, f := range m.Fields() {
		if f.Key == "Output" {
			b.WriteString(f.Value + "\n")
		} else {
			b.WriteString(f.Key + ": " + f.Value + "\r\n")
		}
	}
	b.WriteString("--END COMMAND--\r\n\r\n")
	return b.String()
}

// legacyBlock matches a 13 Command answer in the raw bytes: its ActionID and
// the raw output up to the marker.
var legacyBlock = regexp.MustCompile(`(?s)Response: Follows\r\nPrivilege: Command\r\nActionID: ([^\r\n]*)\r\n(.*?)--END COMMAND--\r\n\r\n`)

// checkLegacyBlocks finds every legacy Command block in the raw bytes and
// checks that Output gives its text: lines joined by "\n", no final newline,
// no marker, colons and blank lines intact.
func checkLegacyBlocks(t *testing.T, rp *replay) {
	t.Helper()
	for _, sub := range legacyBlock.FindAllSubmatch(rp.raw, -1) {
		id, body := string(sub[1]), string(sub[2])
		m := rp.response(t, id)
		if m.Name() != "Follows" {
			t.Errorf("ActionID %q: Response %q, want Follows", id, m.Name())
		}
		wantOutput(t, m, strings.TrimSuffix(body, "\n"))
	}
}

func checkLoginLogoff(t *testing.T, rp *replay) {
	login := rp.msgs[0]
	wantGet(t, login, "Response", "Success")
	wantGet(t, login, "Message", "Authentication accepted")
	booted := rp.next(t, login)
	if booted.EventName() != "FullyBooted" {
		t.Errorf("event after login = %q, want FullyBooted", booted.EventName())
	}
	if len(rp.events("SuccessfulAuth")) != 1 {
		t.Errorf("want one SuccessfulAuth event")
	}
	bye := rp.msgs[len(rp.msgs)-1]
	wantGet(t, bye, "Response", "Goodbye")
	wantGet(t, bye, "Message", "Thanks for all the fish.")
}

func checkAuthFailed(t *testing.T, rp *replay) {
	m := rp.msgs[0]
	wantGet(t, m, "Response", "Error")
	wantGet(t, m, "Message", "Authentication failed")
}

func checkActionBeforeLogin(t *testing.T, rp *replay) {
	denied := 0
	for _, m := range rp.msgs {
		if m.Get("Message") == "Permission denied" {
			denied++
		}
	}
	if denied != 3 {
		t.Errorf("%d Permission denied responses, want 3 (Ping, CoreStatus, Command)", denied)
	}
}

func checkChallenge(t *testing.T, rp *replay) {
	m := rp.find(t, "with a Challenge", func(m *amiproto.Message) bool { return m.Has("Challenge") })
	if c := m.Get("Challenge"); len(c) != 9 || strings.Trim(c, "0123456789") != "" {
		t.Errorf("Challenge = %q, want 9 digits", c)
	}
}

func checkPingAndListCommands(t *testing.T, rp *replay) {
	ping := rp.response(t, "ping-1")
	wantGet(t, ping, "Ping", "Pong")
	if !ping.Has("Timestamp") {
		t.Error("Ping response has no Timestamp")
	}
	// The Ping response came in three TCP reads.
	start := bytes.Index(rp.raw, []byte("Response: Success\r\nActionID: ping-1\r\n"))
	end := start + bytes.Index(rp.raw[start:], []byte("\r\n\r\n")) + 4
	segments, off := 0, 0
	for _, c := range recvChunks(t, rp.ver, "04_ping_coresettings_corestatus_listcommands", rp.raw) {
		if off < end && off+len(c) > start {
			segments++
		}
		off += len(c)
	}
	if segments != 3 {
		t.Errorf("Ping response spans %d TCP reads, want 3", segments)
	}

	cmds := rp.response(t, "listcmds-1")
	st := cmds.Get("SendText")
	if !strings.Contains(st, "A content type\tcan be optionally specified") || !strings.HasSuffix(st, "(Priv: call,all)") {
		t.Errorf("ListCommands SendText = %q, want its TAB and its (Priv: ...) kept", st)
	}
	wantGet(t, cmds, "Ping", "Keepalive command.  (Priv: <none>)")
	noID := rp.find(t, "without ActionID", func(m *amiproto.Message) bool { return !m.Has("ActionID") })
	wantGet(t, noID, "Response", "Success")
}

func checkCommand(t *testing.T, rp *replay) {
	version, help := "Asterisk 22.10.1 built by root @ vm on a x86_64 running Linux on 2026-11-26 04:19:55 UTC", 221
	invalid := "Error"
	if !rp.is22() {
		version, help = "Asterisk 13.38.3 built by root @ vm on a x86_64 running Linux on 2026-11-26 04:34:00 UTC", 181
		invalid = "Follows" // 13 answers an invalid CLI command with a Follows block
	}
	wantOutput(t, rp.response(t, "cmd-version"), version)
	out, _ := rp.response(t, "cmd-help").Output()
	if n := strings.Count(out, "\n") + 1; n != help || strings.Contains(out, "--END COMMAND--") {
		t.Errorf("core show help: %d lines, want %d, without the END marker", n, help)
	}
	for _, id := range []string{"cmd-invalid", "cmd-partial"} {
		m := rp.response(t, id)
		out, _ := m.Output()
		if m.Name() != invalid || !strings.HasPrefix(out, "No such command '") {
			t.Errorf("%s: Response %q, Output %q; want %s with No such command", id, m.Name(), out, invalid)
		}
	}
	uptime, _ := rp.response(t, "cmd-uptime").Output()
	if lines := strings.Split(uptime, "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "System uptime: ") || !strings.HasPrefix(lines[1], "Last reload: ") {
		t.Errorf("uptime output = %q", uptime)
	}
	dialplan, _ := rp.response(t, "cmd-dialplan").Output()
	if !strings.Contains(dialplan, "\n  'echo' =>         1. Answer()") || !strings.Contains(dialplan, "]\n\n-= 1 extension (3 priorities) in 1 context. =-") {
		t.Errorf("dialplan output lost its indentation or blank line: %q", dialplan)
	}
	wantOutput(t, rp.response(t, "cmd-emptyoutput"), "Console verbose is still 3.")
	missing := rp.response(t, "cmd-missing")
	wantGet(t, missing, "Message", "No command provided")
	if _, ok := missing.Output(); ok {
		t.Error("Error without Output reports Command output")
	}
}

func checkCommandEmptyAndConcise(t *testing.T, rp *replay) {
	// 22 sends one empty Output line, 13 an empty Follows block: the same
	// empty output.
	wantOutput(t, rp.response(t, "concise-empty"), "")
	concise, _ := rp.response(t, "concise-2").Output()
	if lines := strings.Split(concise, "\n"); len(lines) != 2 || strings.Count(lines[0], "!") != 13 {
		t.Errorf("concise output = %q, want 2 lines of 14 !-separated fields", concise)
	}
	db, _ := rp.response(t, "dbshow").Output()
	if !strings.HasPrefix(db, "/pbx/UUID                                         : ") || !strings.HasSuffix(db, "\n1 results found.") {
		t.Errorf("database show output = %q", db)
	}
	queue, _ := rp.response(t, "queueshow").Output()
	if !strings.Contains(queue, "\n   Members: \n      Agent One (Local/agent@test)") {
		t.Errorf("queue show output lost its indentation: %q", queue)
	}
}

// checkLegacyOutputs checks 13's Command bodies against the table in the
// header of 05c_command_more_outputs.txt, which the recorder computed from
// the raw bytes: body size, LF-terminated lines, and "\n\n" pairs. Every
// body there ends in LF, which Output drops.
func checkLegacyOutputs(t *testing.T, rp *replay) {
	table := []struct{ size, lines, blank int }{
		{36, 2, 0}, {53, 3, 0}, {126, 2, 0}, {44, 1, 0}, {26, 1, 0}, {2210, 53, 3},
		{295, 3, 0}, {91, 2, 0}, {39, 1, 0}, {356, 8, 1}, {84, 1, 0}, {25, 1, 0},
		{817, 10, 0}, {273, 12, 2}, {409, 8, 2}, {802, 19, 0}, {350, 6, 1}, {302, 12, 2},
		{5431, 88, 0}, {136, 3, 0}, {266, 4, 0}, {20134, 382, 7},
	}
	for i, want := range table {
		m := rp.response(t, fmt.Sprintf("c%02d", i))
		out, ok := m.Output()
		lines := m.Values("Output")
		blank := strings.Count(out+"\n", "\n\n")
		if !ok || len(out)+1 != want.size || len(lines) != want.lines || blank != want.blank {
			t.Errorf("c%02d: %d bytes, %d lines, %d blank; want %d, %d, %d",
				i, len(out)+1, len(lines), blank, want.size, want.lines, want.blank)
		}
	}
	// "core show settings" has "Key: value"-looking lines and blank lines.
	settings, _ := rp.response(t, "c05").Output()
	if !strings.Contains(settings, "\n  Version:                     13.38.3\n") {
		t.Errorf("core show settings output lost a colon line: %.200q", settings)
	}
}

func checkEmptyLists(t *testing.T, rp *replay) {
	m := rp.find(t, "CoreShowChannelsComplete", func(m *amiproto.Message) bool { return m.EventName() == "CoreShowChannelsComplete" })
	wantGet(t, m, "EventList", "Complete")
	wantGet(t, m, "ListItems", "0")
	st := rp.find(t, "StatusComplete", func(m *amiproto.Message) bool { return m.EventName() == "StatusComplete" })
	wantGet(t, st, "Items", "0")
}

func checkCollections(t *testing.T, rp *replay) {
	// ActionID is the last line of Status items, and Variables repeat.
	statuses := 0
	for _, m := range rp.events("Status") {
		if m.ActionID() != "status-vars" {
			continue
		}
		statuses++
		if last := m.Fields()[len(m.Fields())-1]; last.Key != "ActionID" {
			t.Errorf("Status item's last line is %q, want ActionID", last.Key)
		}
		wantGet(t, m, "Privilege", "Call")
		vals := m.Values("Variable")
		vars := m.Variables()
		if len(vals) != 3 || vars["FOO"] == "" || vars["BAR"] != "(null)" || !strings.HasPrefix(vars["CHANNEL"], "Local/") {
			t.Errorf("Status Variables = %q → %v", vals, vars)
		}
	}
	if statuses != 10 {
		t.Errorf("%d Status items for status-vars, want 10", statuses)
	}
	csc := rp.find(t, "CoreShowChannel", func(m *amiproto.Message) bool { return m.EventName() == "CoreShowChannel" })
	if csc.Fields()[1].Key != "ActionID" {
		t.Errorf("CoreShowChannel's 2nd line is %q, want ActionID", csc.Fields()[1].Key)
	}

	// QueueRule sends an extra blank line; what follows still parses.
	rule := rp.response(t, "queuerule")
	if len(rule.Fields()) != 2 {
		t.Errorf("QueueRule response has %d fields, want 2", len(rule.Fields()))
	}
	after := rp.next(t, rule)
	if rp.is22() {
		wantGet(t, after, "ActionID", "queues-legacy")
		wantGet(t, after, "Response", "Error")
		// IAXpeers' entries carry no ActionID, IAXpeerlist's do.
		var bare, tagged int
		for _, m := range rp.events("PeerEntry") {
			switch m.ActionID() {
			case "":
				bare++
			case "iaxpeerlist":
				tagged++
			}
		}
		if bare != 2 || tagged != 2 {
			t.Errorf("PeerEntry: %d without ActionID, %d with; want 2 and 2", bare, tagged)
		}
		return
	}
	// 13's Queues answers raw CLI text: no Response line, no ActionID.
	if after.Kind() != amiproto.KindUnknown || after.ActionID() != "" {
		t.Fatalf("Queues text read as %s with ActionID %q", after.Kind(), after.ActionID())
	}
	if last := after.Fields()[len(after.Fields())-1]; last != (amiproto.Field{Value: "   No Callers"}) {
		t.Errorf("Queues text ends in %+v", last)
	}
	if v := after.Fields()[2].Value; !strings.Contains(v, "\x1b[1;32;40mNot in use\x1b[0m") {
		t.Errorf("ANSI escapes lost: %q", v)
	}
	bye := rp.next(t, after)
	wantGet(t, bye, "Response", "Goodbye")
	wantGet(t, bye, "ActionID", "logoff")
}

func checkOriginateAsync(t *testing.T, rp *replay) {
	wantGet(t, rp.response(t, "orig-echo"), "Message", "Originate successfully queued")
	ors := rp.events("OriginateResponse")
	if len(ors) != 1 {
		t.Fatalf("%d OriginateResponse events, want 1", len(ors))
	}
	or := ors[0]
	// An Event that carries a Response key: the first line decides.
	if or.Kind() != amiproto.KindEvent {
		t.Errorf("OriginateResponse kind = %s", or.Kind())
	}
	wantGet(t, or, "Response", "Success")
	wantGet(t, or, "Reason", "4")
	wantGet(t, or, "ActionID", "orig-echo")
	ch := or.Get("Channel")
	if !strings.HasPrefix(ch, "Local/echo@test-") || !strings.HasSuffix(ch, ";1") {
		t.Fatalf("Channel = %q", ch)
	}
	wantGet(t, or, "ChanVariable("+ch+")", "FOO=")
	if cv := or.ChanVariables(); len(cv) != 2 || cv["FOO"] != "" || cv["BAR"] != "" {
		t.Errorf("ChanVariables = %v, want FOO and BAR empty", cv)
	}
	if len(rp.events("LocalBridge")) != 1 || !rp.events("LocalBridge")[0].Has("LocalOneChannel") {
		t.Error("want one LocalBridge with LocalOne* fields")
	}
}

func checkVarsAndUserEvent(t *testing.T, rp *replay) {
	found := false
	for _, m := range rp.msgs {
		if m.ChanVariables()["BAR"] == "bar: with colon" && m.Get("ChanVariable") == "FOO=foo-value" {
			found = true
			break
		}
	}
	if !found {
		t.Error("no message with ChanVariable: BAR=bar: with colon")
	}
	// Action: UserEvent keeps both Header1 lines and copies the ActionID.
	ue := rp.find(t, "UserEvent AmiCustom", func(m *amiproto.Message) bool { return m.Get("UserEvent") == "AmiCustom" })
	if got := ue.Values("Header1"); !slices.Equal(got, []string{"one", "one again"}) {
		t.Errorf("Header1 values = %q", got)
	}
	wantGet(t, ue, "X-With-Colon", "a: b: c")
	wantGet(t, ue, "ActionID", "uev-1")
	dial := rp.find(t, "dialplan UserEvent", func(m *amiproto.Message) bool { return m.Get("UserEvent") == "TestEvent" })
	if got := dial.Values("Header1"); !slices.Equal(got, []string{"dup"}) {
		t.Errorf("dialplan UserEvent Header1 = %q, want the last one only", got)
	}
	wantGet(t, rp.response(t, "getvar-nochan"), "Response", "Error")
}

func checkOriginateFailures(t *testing.T, rp *replay) {
	m := rp.find(t, "failed OriginateResponse", func(m *amiproto.Message) bool {
		return m.EventName() == "OriginateResponse" && m.Get("Response") == "Failure" && m.Get("Reason") == "0"
	})
	wantGet(t, m, "Uniqueid", "<unknown>")
	wantGet(t, m, "Channel", "Local/nosuchexten@test")
	rp.find(t, "Originate failed", func(m *amiproto.Message) bool {
		return m.Kind() == amiproto.KindResponse && m.Get("Message") == "Originate failed"
	})
	rp.find(t, "busy OriginateResponse", func(m *amiproto.Message) bool {
		return m.EventName() == "OriginateResponse" && m.Get("Reason") == "5"
	})
}

func checkPipelined(t *testing.T, rp *replay) {
	pongs := 0
	for _, m := range rp.msgs {
		if m.Get("Ping") == "Pong" {
			pongs++
		}
	}
	if pongs != 50 {
		t.Errorf("%d Pong responses, want 50", pongs)
	}
}

func checkEventsAction(t *testing.T, rp *replay) {
	rp.find(t, "Events: On", func(m *amiproto.Message) bool { return m.Kind() == amiproto.KindResponse && m.Get("Events") == "On" })
	rp.find(t, "Invalid event mask", func(m *amiproto.Message) bool { return m.Get("Message") == "Invalid event mask" })
}

func checkOddActions(t *testing.T, rp *replay) {
	long := rp.find(t, "with the 900-byte ActionID", func(m *amiproto.Message) bool { return len(m.ActionID()) == 900 })
	wantGet(t, long, "Ping", "Pong")
	tooLong := rp.find(t, "line too long", func(m *amiproto.Message) bool {
		return m.Get("Message") == "Failed to parse message: line too long"
	})
	if tooLong.Has("ActionID") {
		t.Error("line-too-long response has an ActionID")
	}
	rp.response(t, "id:with:colons: and spaces")
	rp.response(t, "leading-spaces   ") // trailing blanks are kept
	rp.response(t, "dup-first")
	missing := 0
	for _, m := range rp.msgs {
		if m.Get("Message") == "Missing action in request" && !m.Has("ActionID") {
			missing++
		}
	}
	if missing != 3 {
		t.Errorf("%d Missing action responses without ActionID, want 3 (one per stray blank line)", missing)
	}
}

// checkRecovered checks the session's Ping responses after the bad input.
func checkRecovered(ids ...string) func(t *testing.T, rp *replay) {
	return func(t *testing.T, rp *replay) {
		for _, id := range ids {
			wantGet(t, rp.response(t, id), "Ping", "Pong")
		}
		rp.find(t, "Missing action", func(m *amiproto.Message) bool { return m.Get("Message") == "Missing action in request" })
	}
}

func checkLineTooLong(want int, after string) func(t *testing.T, rp *replay) {
	return func(t *testing.T, rp *replay) {
		n := 0
		for _, m := range rp.msgs {
			if m.Get("Response") == "Error" && !m.Has("ActionID") {
				n++
			}
		}
		if n != want {
			t.Errorf("%d Error responses without ActionID, want %d", n, want)
		}
		rp.find(t, "line too long", func(m *amiproto.Message) bool {
			return m.Get("Message") == "Failed to parse message: line too long"
		})
		wantGet(t, rp.response(t, after), "Response", "Success")
	}
}

func checkTooManyHeaders(t *testing.T, rp *replay) {
	rp.find(t, "Too many lines", func(m *amiproto.Message) bool {
		return m.Get("Message") == "Too many lines in message or allocation failure" && !m.Has("ActionID")
	})
}

func checkShutdownEvent(t *testing.T, rp *replay) {
	last := rp.msgs[len(rp.msgs)-1]
	if last.EventName() != "Shutdown" {
		t.Fatalf("last message is %s %q, want the Shutdown event", last.Kind(), last.Name())
	}
	wantGet(t, last, "Shutdown", "Cleanly")
	wantGet(t, last, "Restart", "False")
}

// checkBurst checks the event mix of a burst capture. For 22 it is
// 14_burst_200_stats.json's event_types plus FullyBooted and SuccessfulAuth
// (the observer also sees the burst session's SuccessfulAuth); 13 saw one
// more call tear down, counted from the raw bytes.
func checkBurst(successfulAuth int) func(t *testing.T, rp *replay) {
	return func(t *testing.T, rp *replay) {
		want := map[string]int{
			"Newexten": 800, "DeviceStateChange": 800, "Newchannel": 400, "Newstate": 400,
			"Hangup": 400, "Cdr": 400, "LocalBridge": 200, "DialBegin": 200, "DialEnd": 200,
			"OriginateResponse": 200, "HangupRequest": 200, "SoftHangupRequest": 200,
			"FullyBooted": 1, "SuccessfulAuth": successfulAuth,
		}
		if !rp.is22() {
			want["Newexten"], want["DeviceStateChange"], want["Hangup"], want["Cdr"] = 801, 802, 402, 402
			want["HangupRequest"], want["SoftHangupRequest"] = 201, 201
		}
		got := map[string]int{}
		for _, m := range rp.msgs {
			if name := m.EventName(); name != "" {
				got[name]++
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("events = %v\nwant %v", got, want)
		}
	}
}

func checkReload(t *testing.T, rp *replay) {
	bad := rp.find(t, "Reload of nosuchmod", func(m *amiproto.Message) bool {
		return m.EventName() == "Reload" && m.Get("Module") == "nosuchmod"
	})
	wantGet(t, bad, "Status", "2")
}

// sentActions returns the actions the client sent in a capture.
func sentActions(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "captures", "asterisk-22", name+".sent.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestReader_ReadsActions reads what clients sent, as amitest does: the odd
// but valid forms Asterisk accepts, and, with Asterisk's own 1 KiB line
// limit, an over-long line that costs only its own message.
func TestReader_ReadsActions(t *testing.T) {
	r := amiproto.NewReaderLimits(bytes.NewReader(sentActions(t, "10a_unknown_and_odd_actions")), amiproto.ReaderLimits{MaxLineBytes: 1023})
	var got []string
	var limitErrs int
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			break
		}
		var perr *amiproto.ProtocolError
		if errors.As(err, &perr) && errors.Is(err, amiproto.ErrLineTooLong) {
			limitErrs++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind() != amiproto.KindAction && m.Kind() != amiproto.KindUnknown {
			t.Errorf("read a %s", m.Kind())
		}
		got = append(got, m.Get("Action")+"/"+m.ActionID())
	}
	want := []string{
		"Login/login", "NoSuchThing/unk-1", "NoSuchThing/", "CoreStatus/", "Ping/" + strings.Repeat("L", 900),
		"Ping/after-long", "Ping/id:with:colons: and spaces", "Ping/nospace", "ping/lowercase", "PING/UPPER",
		"Ping/leading-spaces   ", "Ping/dup-first", "/no-action-header", "/empty-action", "Ping/final", "Logoff/logoff",
	}
	if limitErrs != 1 || !slices.Equal(got, want) {
		t.Errorf("%d limit errors, actions:\n%q\nwant 1 and\n%q", limitErrs, got, want)
	}
}

// TestReader_GarbageAndHugeLine feeds the reader the 4 KB of random bytes and
// the 100 KB line of sessions 11b and 11c: neither kills the stream, and the
// Pings after them read cleanly.
func TestReader_GarbageAndHugeLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wantErr error
	}{
		{"11b_garbage_bytes", nil},
		{"11c_100KB_line", amiproto.ErrLineTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := amiproto.NewReader(bytes.NewReader(sentActions(t, tc.name)))
			var pings []string
			var errs []error
			for {
				m, err := r.ReadMessage()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					errs = append(errs, err)
					if len(errs) > 10 {
						t.Fatalf("errors: %v", errs)
					}
					continue
				}
				if m.Get("Action") == "Ping" {
					pings = append(pings, m.ActionID())
				}
			}
			if len(pings) == 0 || pings[len(pings)-1] == "" {
				t.Errorf("pings after the bad input: %q", pings)
			}
			if tc.wantErr == nil && len(errs) > 0 || tc.wantErr != nil && (len(errs) != 1 || !errors.Is(errs[0], tc.wantErr)) {
				t.Errorf("errors = %v, want %v", errs, tc.wantErr)
			}
		})
	}
}

// step is one ReadMessage result: a message's fields or an error.
type step struct {
	fields []amiproto.Field
	err    error
}

// readSteps reads s (no banner) up to EOF with the given limits.
func readSteps(t *testing.T, src io.Reader, limits amiproto.ReaderLimits) []step {
	t.Helper()
	r := amiproto.NewReaderLimits(src, limits)
	var steps []step
	for range 1000 {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return steps
		}
		if err != nil {
			steps = append(steps, step{err: err})
			if !errors.Is(err, amiproto.ErrLineTooLong) && !errors.Is(err, amiproto.ErrMessageTooLarge) {
				return steps
			}
			continue
		}
		steps = append(steps, step{fields: m.Fields()})
	}
	t.Fatal("reader does not reach EOF")
	return nil
}

// fields builds a field list from key, value pairs.
func fields(kv ...string) []amiproto.Field {
	var fs []amiproto.Field
	for i := 0; i+1 < len(kv); i += 2 {
		fs = append(fs, amiproto.Field{Key: kv[i], Value: kv[i+1]})
	}
	return fs
}

func wantSteps(t *testing.T, got []step, want ...[]amiproto.Field) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d results %+v, want %d messages", len(got), got, len(want))
	}
	for i := range want {
		if got[i].err != nil || !slices.Equal(got[i].fields, want[i]) {
			t.Errorf("message %d = %q (err %v), want %q", i, got[i].fields, got[i].err, want[i])
		}
	}
}

func TestReader_Framing(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want [][]amiproto.Field
	}{
		{"CRLF", "Response: Success\r\nActionID: 1\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Success", "ActionID", "1")}},
		{"bare LF", "Response: Success\nActionID: 1\n\nEvent: X\n\n",
			[][]amiproto.Field{fields("Response", "Success", "ActionID", "1"), fields("Event", "X")}},
		{"mixed line endings", "Response: Success\nActionID: 1\r\n\n",
			[][]amiproto.Field{fields("Response", "Success", "ActionID", "1")}},
		{"bare CR inside a value is data", "Event: X\r\nA: one\rtwo\r\nB: three\r\r\nC: \r\r\n\r\n",
			[][]amiproto.Field{fields("Event", "X", "A", "one\rtwo", "B", "three\r", "C", "\r")}},
		{"blank lines between messages", "\r\n\n\r\nEvent: A\r\n\r\n\r\n\n\r\nEvent: B\r\n\r\n\r\n",
			[][]amiproto.Field{fields("Event", "A"), fields("Event", "B")}},
		{"leading blanks skipped, trailing kept", "Event: X\r\nA:v\r\nB:    v  \r\nC:\t v\t\r\nD:\r\nE: \r\n\r\n",
			[][]amiproto.Field{fields("Event", "X", "A", "v", "B", "v  ", "C", "v\t", "D", "", "E", "")}},
		{"Output keeps indentation past its one space", "Response: Success\r\nOutput:    Members: \r\noutput:x\r\nOutput: \r\n\r\n",
			[][]amiproto.Field{fields("Response", "Success", "Output", "   Members: ", "output", "x", "Output", "")}},
		{"splits at the first colon", "Event: X\r\nActionID: a:b: c\r\nAppData: BAR=bar: with colon\r\n\r\n",
			[][]amiproto.Field{fields("Event", "X", "ActionID", "a:b: c", "AppData", "BAR=bar: with colon")}},
		{"header names with _ ( ) / ; -", "Event: OriginateResponse\r\nChanVariable(Local/x-0001;1): FOO=\r\nX_Custom-Header(a b): v\r\n\r\n",
			[][]amiproto.Field{fields("Event", "OriginateResponse", "ChanVariable(Local/x-0001;1)", "FOO=", "X_Custom-Header(a b)", "v")}},
		{"repeated keys kept in order", "Event: Status\r\nVariable: A=1\r\nvariable: B=2\r\nVariable: A=3\r\n\r\n",
			[][]amiproto.Field{fields("Event", "Status", "Variable", "A=1", "variable", "B=2", "Variable", "A=3")}},
		{"line without a colon kept, stream goes on", "Response: Success\r\njunk line\r\nActionID: 1\r\n\r\njunk\r\n\r\nEvent: Y\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Success", "", "junk line", "ActionID", "1"), fields("", "junk"), fields("Event", "Y")}},
		{"empty key", "Event: X\r\n: v\r\n\r\n",
			[][]amiproto.Field{fields("Event", "X", "", "v")}},
		{"TAB in a value", "Response: Success\r\nSendText: a\tb  (Priv: call,all)\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Success", "SendText", "a\tb  (Priv: call,all)")}},
		{"NUL and high bytes are data", "Event: X\r\nA: \x00\xff\xfe\r\n\r\n",
			[][]amiproto.Field{fields("Event", "X", "A", "\x00\xff\xfe")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantSteps(t, readSteps(t, strings.NewReader(tt.in), amiproto.ReaderLimits{}), tt.want...)
			// The same bytes one at a time give the same messages.
			wantSteps(t, readSteps(t, iotest.OneByteReader(strings.NewReader(tt.in)), amiproto.ReaderLimits{}), tt.want...)
		})
	}
}

func TestReader_LegacyCommandOutput(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want [][]amiproto.Field
	}{
		{"colons and blank lines in raw output",
			"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\n\nVersion: 13\nKey: value\n\n\nlast\n--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n",
			[][]amiproto.Field{
				fields("Response", "Follows", "Privilege", "Command", "ActionID", "c1", "Output", "", "Output", "Version: 13", "Output", "Key: value", "Output", "", "Output", "", "Output", "last"),
				fields("Event", "Next"),
			}},
		{"no ActionID",
			"Response: Follows\r\nPrivilege: Command\r\nno such: thing\n--END COMMAND--\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Follows", "Privilege", "Command", "Output", "no such: thing")}},
		{"empty output",
			"Response: Follows\r\nPrivilege: Command\r\nActionID: e\r\n--END COMMAND--\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Follows", "Privilege", "Command", "ActionID", "e")}},
		{"marker after text on the same line",
			"Response: Follows\r\nPrivilege: Command\r\nActionID: m\r\nline one\nno newline--END COMMAND--\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Follows", "Privilege", "Command", "ActionID", "m", "Output", "line one", "Output", "no newline")}},
		{"bare LF stream throughout",
			"Response: Follows\nPrivilege: Command\nActionID: lf\na: b\n\nc\n--END COMMAND--\n\nEvent: Next\n\n",
			[][]amiproto.Field{
				fields("Response", "Follows", "Privilege", "Command", "ActionID", "lf", "Output", "a: b", "Output", "", "Output", "c"),
				fields("Event", "Next"),
			}},
		{"marker missing: a CRLF blank line still ends it",
			"Response: Follows\r\nPrivilege: Command\r\nActionID: x\r\ntext\n\r\nEvent: Next\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Follows", "Privilege", "Command", "ActionID", "x", "Output", "text"), fields("Event", "Next")}},
		{"Follows only on the first line",
			"Response: Success\r\nX: Response: Follows\r\nResponse: Follows\r\n\r\nEvent: Next\r\n\r\n",
			[][]amiproto.Field{fields("Response", "Success", "X", "Response: Follows", "Response", "Follows"), fields("Event", "Next")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantSteps(t, readSteps(t, strings.NewReader(tt.in), amiproto.ReaderLimits{}), tt.want...)
			wantSteps(t, readSteps(t, iotest.OneByteReader(strings.NewReader(tt.in)), amiproto.ReaderLimits{}), tt.want...)
		})
	}
}

func TestReader_LimitsSkipOnlyTheBadMessage(t *testing.T) {
	next := "Event: Next\r\nA: b\r\n\r\n"
	nextFields := fields("Event", "Next", "A", "b")
	long := strings.Repeat("x", 100)
	small := amiproto.ReaderLimits{MaxLineBytes: 64, MaxMessageBytes: 256, MaxFields: 8}
	tests := []struct {
		name    string
		in      string
		limits  amiproto.ReaderLimits
		wantErr error
	}{
		{"long first line", "Event: " + long + "\r\nB: c\r\n\r\n" + next, small, amiproto.ErrLineTooLong},
		{"long middle line", "Event: X\r\nA: " + long + "\r\nB: c\r\n\r\n" + next, small, amiproto.ErrLineTooLong},
		{"long last line", "Event: X\r\nA: " + long + "\r\n\r\n" + next, small, amiproto.ErrLineTooLong},
		{"several long lines", "Event: X\r\nA: " + long + "\r\nB: " + long + "\r\n\r\n" + next, small, amiproto.ErrLineTooLong},
		{"long line with bare LF", "Event: X\nA: " + long + "\nB: c\n\n" + next, small, amiproto.ErrLineTooLong},
		{"line longer than the read buffer", "Event: X\r\nA: " + strings.Repeat("y", 300<<10) + "\r\n\r\n" + next, amiproto.ReaderLimits{}, amiproto.ErrLineTooLong},
		{"message too large", "Event: X\r\n" + strings.Repeat("A: "+strings.Repeat("z", 50)+"\r\n", 6) + "\r\n" + next, small, amiproto.ErrMessageTooLarge},
		{"too many fields", "Event: X\r\n" + strings.Repeat("A: b\r\n", 8) + "\r\n" + next, small, amiproto.ErrMessageTooLarge},
		{"too large inside a Follows block with blank lines",
			"Response: Follows\r\nPrivilege: Command\r\n" + strings.Repeat("out: x\n\n", 20) + "--END COMMAND--\r\n\r\n" + next, small, amiproto.ErrMessageTooLarge},
		{"long line inside a Follows block",
			"Response: Follows\r\nPrivilege: Command\r\na\n\n" + long + "\n\nb\n--END COMMAND--\r\n\r\n" + next, small, amiproto.ErrLineTooLong},
		{"too large on the marker line",
			"Response: Follows\r\nPrivilege: Command\r\n" + strings.Repeat("z", 60) + "\n" + strings.Repeat("z", 60) + "\n" + strings.Repeat("z", 60) + "\n" + strings.Repeat("z", 49) + "--END COMMAND--\r\n\r\n" + next,
			small, amiproto.ErrMessageTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, split := range []struct {
				name string
				src  func() io.Reader
			}{
				{"whole", func() io.Reader { return strings.NewReader(tt.in) }},
				{"one-byte", func() io.Reader { return iotest.OneByteReader(strings.NewReader(tt.in)) }},
			} {
				got := readSteps(t, split.src(), tt.limits)
				if len(got) != 2 {
					t.Fatalf("%s: got %+v, want an error and one message", split.name, got)
				}
				var perr *amiproto.ProtocolError
				if !errors.As(got[0].err, &perr) || !errors.Is(got[0].err, tt.wantErr) || perr.Line < 1 {
					t.Errorf("%s: error = %v, want a *ProtocolError wrapping %v with a line number", split.name, got[0].err, tt.wantErr)
				}
				if !slices.Equal(got[1].fields, nextFields) {
					t.Errorf("%s: next message = %q (err %v), want %q", split.name, got[1].fields, got[1].err, nextFields)
				}
			}
		})
	}
}

func TestReader_LimitsAtTheEdge(t *testing.T) {
	limits := amiproto.ReaderLimits{MaxLineBytes: 10, MaxMessageBytes: 20, MaxFields: 2}
	// Exactly at every limit: accepted.
	in := "Event: 123\r\nA: 456789\r\n\r\n"
	wantSteps(t, readSteps(t, strings.NewReader(in), limits), fields("Event", "123", "A", "456789"))
	// Read a byte at a time, the line's CR arrives before its LF: it does
	// not count toward the line either.
	wantSteps(t, readSteps(t, iotest.OneByteReader(strings.NewReader(in)), limits), fields("Event", "123", "A", "456789"))
	// One byte more is too much.
	got := readSteps(t, strings.NewReader("Event: 1234\r\n\r\n"), limits)
	if len(got) != 1 || !errors.Is(got[0].err, amiproto.ErrLineTooLong) {
		t.Errorf("11-byte line: got %+v, want ErrLineTooLong", got)
	}
}

func TestReader_EOF(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty stream", "", io.EOF},
		{"only blank lines", "\r\n\r\n\n", io.EOF},
		{"inside a message", "Response: Success\r\nActionID: 1\r\n", io.ErrUnexpectedEOF},
		{"inside a line", "Response: Success\r\nActionID: 1", io.ErrUnexpectedEOF},
		{"inside a line between messages", "Event: A\r\n\r\nEve", io.ErrUnexpectedEOF},
		{"inside a Follows block", "Response: Follows\r\nPrivilege: Command\r\nout\n", io.ErrUnexpectedEOF},
		{"inside an over-long line", "Event: A\r\nB: " + strings.Repeat("x", 100), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := amiproto.NewReaderLimits(strings.NewReader(tt.in), amiproto.ReaderLimits{MaxLineBytes: 32})
			var err error
			for range 10 {
				if _, err = r.ReadMessage(); err != nil && !errors.Is(err, amiproto.ErrLineTooLong) {
					break
				}
			}
			if err != tt.want {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReader_Banner(t *testing.T) {
	for _, tt := range []struct {
		in, banner, version string
		err                 error
	}{
		{"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n\r\n", banner22, "11.0.0", nil},
		{"Asterisk Call Manager/2.10.6\n", banner13, "2.10.6", nil},
		{"Asterisk Call Manager/2.10", "", "", io.ErrUnexpectedEOF},
		{"", "", "", io.ErrUnexpectedEOF},
	} {
		r := amiproto.NewReader(strings.NewReader(tt.in))
		b, err := r.ReadBanner()
		if b != tt.banner || err != tt.err || amiproto.BannerVersion(b) != tt.version {
			t.Errorf("ReadBanner(%q) = %q, %v (version %q); want %q, %v (%q)", tt.in, b, err, amiproto.BannerVersion(b), tt.banner, tt.err, tt.version)
		}
	}
	if v := amiproto.BannerVersion("no version here"); v != "" {
		t.Errorf("BannerVersion without a slash = %q", v)
	}
}

// TestReader_MessagesOwnTheirMemory keeps messages across many later reads,
// through buffer compaction and growth, and checks they did not change.
func TestReader_MessagesOwnTheirMemory(t *testing.T) {
	raw := loadRecv(t, "asterisk-22", "06c_collections_with_channels")
	r := amiproto.NewReader(iotest.HalfReader(bytes.NewReader(raw)))
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	var kept []*amiproto.Message
	var copies [][]amiproto.Field
	for {
		m, err := r.ReadMessage()
		if err != nil {
			break
		}
		kept = append(kept, m)
		copies = append(copies, slices.Clone(m.Fields()))
		// Appending to one message must not touch the next one.
		m.Add("X-Test", "appended")
	}
	for i, m := range kept {
		if !slices.Equal(m.Fields()[:len(m.Fields())-1], copies[i]) {
			t.Fatalf("message %d changed after later reads", i)
		}
	}
}

// TestReader_ReadMessageIntoOverwrites: ReadMessageInto replaces the
// Message, and a copy of the old one, or a string taken from it, still
// reads what it did.
func TestReader_ReadMessageIntoOverwrites(t *testing.T) {
	in := "Event: A\r\nK: 1\r\nL: 2\r\n\r\nEvent: B\r\nK: 3\r\n\r\nEvent: C\r\nK: 4\r\nL: 5\r\nM: 6\r\n\r\n"
	r := amiproto.NewReader(strings.NewReader(in))
	var m amiproto.Message
	if err := r.ReadMessageInto(&m); err != nil {
		t.Fatal(err)
	}
	first := m
	val := m.Get("K")
	if err := r.ReadMessageInto(&m); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Fields(), fields("Event", "B", "K", "3")) || val != "1" {
		t.Errorf("fields = %q, earlier value %q", m.Fields(), val)
	}
	if !slices.Equal(first.Fields(), fields("Event", "A", "K", "1", "L", "2")) {
		t.Errorf("copy of the first message reads %q", first.Fields())
	}
	if err := r.ReadMessageInto(&m); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Fields(), fields("Event", "C", "K", "4", "L", "5", "M", "6")) {
		t.Errorf("fields = %q", m.Fields())
	}
	if err := r.ReadMessageInto(&m); err != io.EOF {
		t.Errorf("err = %v, want EOF", err)
	}
}

// flakyReader fails once, like a read deadline, after delivering part of
// the stream.
type flakyReader struct {
	data   []byte
	failAt int
	failed bool
}

var errTransient = errors.New("i/o timeout")

func (f *flakyReader) Read(p []byte) (int, error) {
	if !f.failed && f.failAt == 0 {
		f.failed = true
		return 0, errTransient
	}
	n := len(p)
	if !f.failed {
		n = min(n, f.failAt)
		f.failAt -= n
	}
	n = copy(p, f.data[:min(n, len(f.data))])
	f.data = f.data[n:]
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// TestReader_TransientErrorLosesNothing: after a read error in the middle of
// a message, the next call reads that message whole.
func TestReader_TransientErrorLosesNothing(t *testing.T) {
	in := "Event: A\r\nK: 1\r\n\r\nEvent: B\r\nK: 2\r\nL: 3\r\n\r\n"
	for failAt := range len(in) {
		r := amiproto.NewReader(&flakyReader{data: []byte(in), failAt: failAt})
		var got [][]amiproto.Field
		sawErr := false
		for range 5 {
			m, err := r.ReadMessage()
			if err == io.EOF {
				break
			}
			if err != nil {
				if err != errTransient || sawErr {
					t.Fatalf("failAt %d: err = %v", failAt, err)
				}
				sawErr = true
				continue
			}
			got = append(got, m.Fields())
		}
		if !sawErr || len(got) != 2 || !slices.Equal(got[0], fields("Event", "A", "K", "1")) || !slices.Equal(got[1], fields("Event", "B", "K", "2", "L", "3")) {
			t.Errorf("failAt %d: got %q (error seen %v)", failAt, got, sawErr)
		}
	}
}

// zeroReader never makes progress.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReader_NoProgress(t *testing.T) {
	_, err := amiproto.NewReader(zeroReader{}).ReadMessage()
	if err != io.ErrNoProgress {
		t.Errorf("err = %v, want io.ErrNoProgress", err)
	}
}

func TestReader_Buffered(t *testing.T) {
	in := "Asterisk Call Manager/11.0.0\r\nEvent: A\r\n\r\nEvent: B\r\n\r\n"
	r := amiproto.NewReader(strings.NewReader(in))
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Buffered(), len(in)-len(banner22)-2; got != want {
		t.Errorf("Buffered after banner = %d, want %d", got, want)
	}
	if _, err := r.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != len("Event: B\r\n\r\n") {
		t.Errorf("Buffered after one message = %d", got)
	}
}

// TestReader_MessagesOfEverySize reads messages whose sizes sweep across the
// chunks that read messages are cut from, and past the 64 KiB at which their
// index widens, keeps them all, and checks each against what was sent once
// the last one is read.
func TestReader_MessagesOfEverySize(t *testing.T) {
	var in strings.Builder
	var want [][]amiproto.Field
	add := func(fs []amiproto.Field) {
		want = append(want, fs)
		for _, f := range fs {
			in.WriteString(f.Key + ": " + f.Value + "\r\n")
		}
		in.WriteString("\r\n")
	}
	// Down from large: the first message cut from a chunk is larger than
	// the first chunk.
	for size := 9000; size >= 0; size -= 97 {
		add(fields("Event", "Sized", "N", strconv.Itoa(size), "Pad", strings.Repeat("p", size), "Tail", "t"))
	}
	line := strings.Repeat("w", 30<<10)
	add(fields("Event", "Wide", "A", line, "B", line, "C", line, "D", "end"))
	// A Follows block past 64 KiB: its Output keys are implied, in the
	// wide index too.
	want = append(want, fields("Response", "Follows", "Privilege", "Command", "Output", line, "Output", line, "Output", line+"!"))
	in.WriteString("Response: Follows\r\nPrivilege: Command\r\n" + line + "\n" + line + "\n" + line + "!--END COMMAND--\r\n\r\n")
	add(fields("Event", "After", "K", "v"))

	got := readAll(t, amiproto.NewReader(strings.NewReader(in.String())))
	if len(got) != len(want) {
		t.Fatalf("read %d messages, want %d", len(got), len(want))
	}
	for i, m := range got {
		if !slices.Equal(m.Fields(), want[i]) {
			t.Fatalf("message %d (%s) reads back wrong", i, m.Name())
		}
	}
}
