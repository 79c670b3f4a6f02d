package amiproto_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestHelpers_SendTheActionAsteriskExpects checks the wire form of every
// typed helper: the action name and its fields in order, ActionID aside.
func TestHelpers_SendTheActionAsteriskExpects(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	var mu sync.Mutex
	var got []string // the last action, as "Key: value" lines without ActionID
	record := func(w *amitest.ResponseWriter, r *amitest.Request) {
		mu.Lock()
		got = got[:0]
		for _, f := range r.Fields() {
			if !strings.EqualFold(f.Key, "ActionID") {
				got = append(got, f.Key+": "+f.Value)
			}
		}
		mu.Unlock()
		w.Success("Value", "v1", "Challenge", "123456789")
	}
	for _, name := range []string{"Ping", "Command", "Events", "Challenge", "ListCommands", "CoreShowChannels",
		"SIPpeers", "SIPshowpeer", "Agents", "AgentLogoff", "Sendtext", "Hangup", "GetConfig", "Originate",
		"Redirect", "Getvar", "Setvar", "Status", "CoreStatus", "CoreSettings", "QueueStatus", "QueueSummary",
		"PJSIPShowEndpoints", "DBGet", "DBPut", "UserEvent"} {
		srv.HandleFunc(name, record)
	}
	c := dial(t, srv.URL("admin", "s3cret!"))
	ctx := ctx10s(t)
	ignore := func(_ *amiproto.Response, err error) error { return err }

	for _, tc := range []struct {
		name string
		call func() error
		want []string
	}{
		{"Ping", func() error { return c.Ping(ctx) }, []string{"Action: Ping"}},
		{"Command", func() error { _, err := c.Command(ctx, "core show uptime"); return err },
			[]string{"Action: Command", "Command: core show uptime"}},
		{"EventMask", func() error { return ignore(c.EventMask(ctx, "call,system")) },
			[]string{"Action: Events", "EventMask: call,system"}},
		{"Challenge", func() error { _, err := c.Challenge(ctx); return err },
			[]string{"Action: Challenge", "AuthType: MD5"}},
		{"ListCommands", func() error { return ignore(c.ListCommands(ctx)) }, []string{"Action: ListCommands"}},
		{"CoreShowChannels", func() error { return ignore(c.CoreShowChannels(ctx)) }, []string{"Action: CoreShowChannels"}},
		{"SIPPeers", func() error { return ignore(c.SIPPeers(ctx)) }, []string{"Action: SIPpeers"}},
		{"SIPShowPeer", func() error { return ignore(c.Do(ctx, amiproto.SIPShowPeer{Peer: "100"})) }, []string{"Action: SIPshowpeer", "Peer: 100"}},
		{"Agents", func() error { return ignore(c.Agents(ctx)) }, []string{"Action: Agents"}},
		{"AgentLogoff", func() error { return ignore(c.Do(ctx, amiproto.AgentLogoff{Agent: "1001", Soft: true})) },
			[]string{"Action: AgentLogoff", "Agent: 1001", "Soft: true"}},
		{"Sendtext", func() error { return ignore(c.Do(ctx, amiproto.Sendtext{Channel: "PJSIP/100-1", Message: "hi"})) },
			[]string{"Action: Sendtext", "Channel: PJSIP/100-1", "Message: hi"}},
		{"Hangup", func() error { return ignore(c.Do(ctx, amiproto.Hangup{Channel: "PJSIP/100-1", Cause: 16})) },
			[]string{"Action: Hangup", "Channel: PJSIP/100-1", "Cause: 16"}},
		{"Hangup without cause", func() error { return ignore(c.Do(ctx, amiproto.Hangup{Channel: "PJSIP/100-1"})) },
			[]string{"Action: Hangup", "Channel: PJSIP/100-1"}},
		{"GetConfig", func() error {
			return ignore(c.Do(ctx, amiproto.GetConfig{Filename: "sip.conf", Category: "general"}))
		},
			[]string{"Action: GetConfig", "Filename: sip.conf", "Category: general"}},
		{"Originate", func() error {
			return ignore(c.Do(ctx, amiproto.Originate{Channel: "PJSIP/100", Context: "default", Exten: "200",
				Priority: "1", Timeout: 30000, CallerID: `"Bot" <100>`, Async: true, Variables: map[string]string{"B": "2", "A": "1"}}))
		}, []string{"Action: Originate", "Channel: PJSIP/100", "Context: default", "Exten: 200", "Priority: 1",
			`CallerID: "Bot" <100>`, "Timeout: 30000", "Async: true", "Variable: A=1", "Variable: B=2"}},
		{"Redirect", func() error {
			return ignore(c.Do(ctx, amiproto.Redirect{Channel: "PJSIP/100-1", Context: "default", Exten: "300", Priority: "1"}))
		},
			[]string{"Action: Redirect", "Channel: PJSIP/100-1", "Context: default", "Exten: 300", "Priority: 1"}},
		{"Getvar", func() error {
			resp, err := c.Do(ctx, amiproto.Getvar{Channel: "PJSIP/100-1", Variable: "FOO"})
			if v := resp.Value("Value"); err == nil && v != "v1" {
				t.Errorf("Getvar = %q, want the Value field v1", v)
			}
			return err
		}, []string{"Action: Getvar", "Variable: FOO", "Channel: PJSIP/100-1"}},
		{"Setvar global", func() error { return ignore(c.Do(ctx, amiproto.Setvar{Variable: "G", Value: "x"})) },
			[]string{"Action: Setvar", "Variable: G", "Value: x"}},
		{"Status", func() error {
			return ignore(c.Do(ctx, amiproto.Status{Channel: "PJSIP/100-1", Variables: "FOO,BAR"}))
		},
			[]string{"Action: Status", "Channel: PJSIP/100-1", "Variables: FOO,BAR"}},
		{"CoreStatus", func() error { return ignore(c.CoreStatus(ctx)) }, []string{"Action: CoreStatus"}},
		{"CoreSettings", func() error { return ignore(c.CoreSettings(ctx)) }, []string{"Action: CoreSettings"}},
		{"QueueStatus", func() error { return ignore(c.Do(ctx, amiproto.QueueStatus{Queue: "support"})) },
			[]string{"Action: QueueStatus", "Queue: support"}},
		{"QueueSummary all", func() error { return ignore(c.Do(ctx, amiproto.QueueSummary{})) }, []string{"Action: QueueSummary"}},
		{"PJSIPShowEndpoints", func() error { return ignore(c.PJSIPShowEndpoints(ctx)) }, []string{"Action: PJSIPShowEndpoints"}},
		{"DBGet", func() error { return ignore(c.Do(ctx, amiproto.DBGet{Family: "fam", Key: "key"})) },
			[]string{"Action: DBGet", "Family: fam", "Key: key"}},
		{"DBPut", func() error { return ignore(c.Do(ctx, amiproto.DBPut{Family: "fam", Key: "key", Val: "val"})) },
			[]string{"Action: DBPut", "Family: fam", "Key: key", "Val: val"}},
		{"UserEvent", func() error {
			return ignore(c.Do(ctx, amiproto.UserEvent{Name: "Ping", Headers: []amiproto.Field{{Key: "H", Value: "1"}, {Key: "H", Value: "2"}}}))
		}, []string{"Action: UserEvent", "UserEvent: Ping", "H: 1", "H: 2"}},
	} {
		if err := tc.call(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		mu.Lock()
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s sent\n  %q\nwant\n  %q", tc.name, got, tc.want)
		}
		mu.Unlock()
	}
}

func TestHelpers_AgainstTheFakePBX(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.URL("admin", "s3cret!"))
	ctx := ctx10s(t)
	if _, err := c.Do(ctx, amiproto.DBPut{Family: "cidname", Key: "5551234", Val: "Alice: Smith"}); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Do(ctx, amiproto.DBGet{Family: "cidname", Key: "5551234"}); err != nil || resp.Value("Val") != "Alice: Smith" {
		t.Fatalf("DBGet = %v, %v", resp, err)
	}
	if _, err := c.Do(ctx, amiproto.Setvar{Variable: "GLOBALX", Value: "42"}); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Do(ctx, amiproto.Getvar{Variable: "GLOBALX"}); err != nil || resp.Value("Value") != "42" {
		t.Fatalf("Getvar = %v, %v", resp, err)
	}
	if _, err := c.Do(ctx, amiproto.Getvar{Channel: "PJSIP/nobody-1", Variable: "FOO"}); err == nil {
		t.Fatal("Getvar on a missing channel succeeded")
	}
	st, err := c.CoreSettings(ctx)
	if err != nil || st.Get("AsteriskVersion") != "22.10.1" {
		t.Fatalf("CoreSettings: %v %v", st, err)
	}
	if ch, err := c.Challenge(ctx); err != nil || len(ch) != 9 {
		t.Fatalf("Challenge = %q, %v", ch, err)
	}
	if err := c.Logoff(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err == nil {
		t.Fatal("Ping after Logoff succeeded")
	}
}

func TestHelpers_LoginOnAClientDialedWithoutAUser(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.Addr())
	ctx := ctx10s(t)
	var re *amiproto.ResponseError
	// Before login Asterisk refuses everything but Login and Challenge
	// (capture 02c), and the session stays open.
	if _, err := c.CoreStatus(ctx); !errors.As(err, &re) || re.Response.Get("Message") != "Permission denied" {
		t.Fatalf("CoreStatus before login: %v", err)
	}
	if err := c.Login(ctx, "admin", "s3cret!"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreStatus(ctx); err != nil {
		t.Fatalf("CoreStatus after login: %v", err)
	}
}

func TestNewAction_PanicsOnAnOddArgumentCount(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "odd argument count") {
			t.Fatalf("recover() = %v, want the odd argument count panic", r)
		}
	}()
	amiproto.NewAction("Redirect", "Channel", "PJSIP/100-1", "Context")
}

func TestClient_LogoffReportsWhatHappened(t *testing.T) {
	srv := startPBX(t, amitest.Config{})

	c := dial(t, srv.URL("admin", "s3cret!"))
	if err := c.Logoff(ctx10s(t)); err != nil {
		t.Fatalf("Logoff: %v", err)
	}
	if err := c.Logoff(ctx10s(t)); !errors.Is(err, amiproto.ErrClosed) {
		t.Fatalf("second Logoff: %v, want ErrClosed", err)
	}

	srv.NeverAnswer("Logoff")
	c = dial(t, srv.URL("admin", "s3cret!"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Logoff(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered Logoff: %v, want DeadlineExceeded", err)
	}
	if !errors.Is(c.Err(), amiproto.ErrClosed) {
		t.Fatalf("Err() after Logoff = %v", c.Err())
	}

	c = dial(t, srv.URL("admin", "s3cret!"))
	c.Close()
	if err := c.Logoff(ctx10s(t)); !errors.Is(err, amiproto.ErrClosed) {
		t.Fatalf("Logoff after Close: %v, want ErrClosed", err)
	}
}
