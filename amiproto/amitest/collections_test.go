package amitest_test

import (
	"bytes"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// collectionActions are the actions of capture 06c the fake answers from
// its fixed queue and dialplan configuration. The others of that session
// list live channels, IAX peers and so on, which the fake does not have.
var collectionActions = map[string]bool{
	"login": true, "queuestatus": true, "queuesummary": true,
	"showdialplan": true, "bridgelist": true, "logoff": true,
}

// TestCaptures_Collections plays the queue, dialplan and bridge actions of
// capture 06c (with the Login and Logoff around them) against the fake
// and checks that it answers with the messages Asterisk sent to them:
// the same kinds, event names, keys in the same order (ActionID where
// Asterisk put it) and values but for clocks.
func TestCaptures_Collections(t *testing.T) {
	const name = "06c_collections_with_channels"
	profiles := []struct {
		dir     string
		profile amitest.Profile
	}{{"asterisk-22", amitest.Asterisk22}, {"asterisk-13", amitest.Asterisk13}}
	for _, p := range profiles {
		t.Run(p.dir, func(t *testing.T) {
			t.Parallel()
			base := filepath.Join(captures, p.dir, name)
			sent, ids := pickActions(t, string(readFile(t, base+".sent.bin")))
			_, all, err := readAll(bytes.NewReader(readFile(t, base+".recv.bin")))
			if err != nil {
				t.Fatalf("capture: %v", err)
			}
			var want []*amiproto.Message
			for _, m := range all {
				if ids[m.Get("ActionID")] {
					want = append(want, m)
				}
			}
			// The capture's counts: a guard against a filter that picks
			// nothing, which would make the comparison vacuous.
			if len(sent) != 8 || len(want) < 80 {
				t.Fatalf("picked %d actions and %d answers from the capture", len(sent), len(want))
			}
			srv := start(t, amitest.Config{Profile: p.profile})
			c := dial(t, srv.Addr())
			c.writeRaw(strings.Join(sent, ""))
			compareConversation(t, c.expectEOF(), want)
		})
	}
}

// pickActions splits a recorded client stream into actions and keeps the
// collectionActions, with the set of their ActionIDs.
func pickActions(t *testing.T, stream string) ([]string, map[string]bool) {
	t.Helper()
	var out []string
	ids := map[string]bool{}
	for _, block := range strings.SplitAfter(stream, "\r\n\r\n") {
		m, err := amiproto.NewReader(strings.NewReader(block)).ReadMessage()
		if err != nil {
			continue // the empty tail after the last action
		}
		if !collectionActions[strings.ToLower(m.Get("Action"))] {
			continue
		}
		out = append(out, block)
		ids[m.Get("ActionID")] = true
	}
	return out, ids
}

// listOf sends an action and reads its answer: the response, and for a
// Success with "EventList: start" the items up to the completing event.
func listOf(c *rawClient, action string, kv ...string) (resp *amiproto.Message, items []*amiproto.Message, complete *amiproto.Message) {
	c.t.Helper()
	c.send(action, kv...)
	resp = c.read()
	if resp.Get("EventList") != "start" {
		return resp, nil, nil
	}
	for {
		m := c.read()
		if m.Get("EventList") == "Complete" {
			return resp, items, m
		}
		items = append(items, m)
	}
}

func TestQueueStatus_Filters(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	tests := []struct {
		name    string
		kv      []string
		members []string
	}{
		{"all", nil, []string{"Agent One", "Busy Agent"}},
		{"queue case-insensitive", []string{"Queue", "SUPPORT"}, []string{"Agent One", "Busy Agent"}},
		{"member by interface", []string{"Member", "Local/busy@test"}, []string{"Busy Agent"}},
		{"member by name", []string{"Queue", "support", "Member", "Agent One"}, []string{"Agent One"}},
		{"unknown member", []string{"Member", "Local/nobody@test"}, nil},
	}
	for _, tt := range tests {
		resp, items, done := listOf(c, "QueueStatus", append(tt.kv, "ActionID", "q")...)
		if resp.Get("Message") != "Queue status will follow" || done == nil {
			t.Fatalf("%s: answer:\n%s", tt.name, resp)
		}
		if len(items) == 0 || items[0].EventName() != "QueueParams" || items[0].Get("Queue") != "support" {
			t.Fatalf("%s: items %v, want QueueParams first", tt.name, items)
		}
		var members []string
		for _, m := range items[1:] {
			if m.EventName() != "QueueMember" {
				t.Fatalf("%s: item %s, want QueueMember", tt.name, m)
			}
			members = append(members, m.Get("Name"))
		}
		if !slices.Equal(members, tt.members) {
			t.Errorf("%s: members %q, want %q", tt.name, members, tt.members)
		}
		if got, want := done.Get("ListItems"), len(items); got != strconv.Itoa(want) {
			t.Errorf("%s: ListItems %s, want %d", tt.name, got, want)
		}
	}
}

func TestQueueSummary_QueueFilter(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	for _, tt := range []struct {
		queue string
		items int
	}{{"", 1}, {"Support", 1}, {"nosuchqueue", 0}} {
		_, items, done := listOf(c, "QueueSummary", "Queue", tt.queue)
		if len(items) != tt.items || done.EventName() != "QueueSummaryComplete" || done.Get("ListItems") != strconv.Itoa(tt.items) {
			t.Errorf("Queue %q: %d items, complete:\n%s", tt.queue, len(items), done)
		}
	}
}

func TestShowDialPlan_FiltersAndErrors(t *testing.T) {
	for _, p := range []amitest.Profile{amitest.Asterisk22, amitest.Asterisk13} {
		t.Run(p.String(), func(t *testing.T) {
			srv := start(t, amitest.Config{Profile: p})
			c := dialLogin(t, srv)
			parked := "20"
			if p == amitest.Asterisk13 {
				parked = "21" // 13 also lists the Park extension 700
			}
			ok := []struct {
				kv                             []string
				items, extens, prios, contexts string
			}{
				{[]string{"Context", "parkedcalls"}, parked, parked, parked, "1"},
				{[]string{"Extension", "echo"}, "3", "1", "3", "1"},
				{[]string{"Context", "test", "Extension", "busy"}, "1", "1", "1", "1"},
			}
			for _, tt := range ok {
				resp, items, done := listOf(c, "ShowDialPlan", tt.kv...)
				if resp.Get("Message") != "DialPlan list will follow" || done == nil {
					t.Fatalf("%v: answer:\n%s", tt.kv, resp)
				}
				for _, m := range items {
					if m.EventName() != "ListDialplan" {
						t.Fatalf("%v: item %s", tt.kv, m)
					}
				}
				got := []string{done.Get("ListItems"), done.Get("ListExtensions"), done.Get("ListPriorities"), done.Get("ListContexts")}
				want := []string{tt.items, tt.extens, tt.prios, tt.contexts}
				if strconv.Itoa(len(items)) != tt.items || !slices.Equal(got, want) {
					t.Errorf("%v: %d items, counts %q, want %q", tt.kv, len(items), got, want)
				}
			}
			errs := []struct {
				kv      []string
				message string
			}{
				{[]string{"Context", "nosuch"}, "Did not find context nosuch"},
				{[]string{"Context", "test", "Extension", "nope"}, "Did not find extension nope@test"},
				{[]string{"Extension", "nope"}, "Did not find extension nope in any context"},
			}
			for _, tt := range errs {
				resp, _, _ := listOf(c, "ShowDialPlan", tt.kv...)
				if resp.Name() != "Error" || resp.Get("Message") != tt.message {
					t.Errorf("%v: answer:\n%s\nwant Error %q", tt.kv, resp, tt.message)
				}
			}
			// The connection is in step: the next action gets its own answer.
			c.send("Ping", "ActionID", "after")
			if m := c.read(); m.Get("ActionID") != "after" {
				t.Errorf("after the errors, got:\n%s", m)
			}
		})
	}
}

func TestCollections_ReadonlyUser(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("readonly", "ro", "off")
	// QueueStatus, QueueSummary and BridgeList need no class; ShowDialPlan
	// needs config or reporting.
	for _, a := range []string{"QueueStatus", "QueueSummary", "BridgeList"} {
		if resp, _, done := listOf(c, a); resp.Name() != "Success" || done == nil {
			t.Errorf("%s: %s", a, resp)
		}
	}
	if resp, _, _ := listOf(c, "ShowDialPlan"); resp.Get("Message") != "Permission denied" {
		t.Errorf("ShowDialPlan: %s", resp)
	}
}
