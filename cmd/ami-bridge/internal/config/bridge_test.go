package config

import (
	"reflect"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/bridge"
)

// servers returns the bridge's PBXes for a configuration of s alone.
func servers(s Server) []bridge.ServerConfig {
	out, _ := (&Config{Servers: []Server{s}}).Bridge()
	return out
}

// TestBridgeServers_MaxPendingRequests: servers[].max_pending_requests
// reaches the bridge.
func TestBridgeServers_MaxPendingRequests(t *testing.T) {
	s := DefaultServer()
	s.Name, s.MaxPendingRequests = "pbx1", 9
	if got := servers(s)[0].MaxPendingRequests; got != 9 {
		t.Errorf("MaxPendingRequests = %d, want the configured 9", got)
	}
}

// TestBridgeServers_ActionSessions: servers[].action_sessions reaches the
// bridge as loaded.
func TestBridgeServers_ActionSessions(t *testing.T) {
	s := DefaultServer()
	s.Name, s.ActionSessions = "pbx1", 5
	if got := servers(s)[0].ActionSessions; got != 5 {
		t.Errorf("ActionSessions = %d, want the configured 5", got)
	}
}

// TestBridgeServers_IdleLogoff: servers[].actions.idle_logoff reaches the
// bridge as loaded, 0 (always logged in) by default.
func TestBridgeServers_IdleLogoff(t *testing.T) {
	s := DefaultServer()
	s.Name = "pbx1"
	if got := servers(s)[0].ActionIdleLogoff; got != 0 {
		t.Errorf("default ActionIdleLogoff = %v, want 0", got)
	}
	s.Actions.IdleLogoff = 5 * time.Minute
	if got := servers(s)[0].ActionIdleLogoff; got != 5*time.Minute {
		t.Errorf("ActionIdleLogoff = %v, want the configured 5m", got)
	}
}

// TestBridgeServers_ReplyLimits: servers[].max_reply_entries and
// max_reply_bytes reach the bridge as loaded.
func TestBridgeServers_ReplyLimits(t *testing.T) {
	s := DefaultServer()
	s.Name, s.MaxReplyEntries, s.MaxReplyBytes = "pbx1", 7, 4096
	if got := servers(s)[0]; got.MaxReplyEntries != 7 || got.MaxReplyBytes != 4096 {
		t.Errorf("MaxReplyEntries %d, MaxReplyBytes %d, want the configured 7 and 4096", got.MaxReplyEntries, got.MaxReplyBytes)
	}
}

// TestCheckBridge_EveryFieldHasAKey: a problem the bridge finds names a
// field; every field this package gives the bridge maps to the key that
// set it, so a field added to the bridge without a key here fails.
func TestCheckBridge_EveryFieldHasAKey(t *testing.T) {
	own := map[string]bool{"URL": true, "Secret": true} // checked here, before the bridge sees them
	for f := range reflect.TypeFor[bridge.ServerConfig]().Fields() {
		if _, ok := serverKeys[f.Name]; !ok && !own[f.Name] {
			t.Errorf("bridge.ServerConfig.%s has no key in serverKeys", f.Name)
		}
	}
	// No rule names JetStream.Enabled (HA.Enabled's says it is needed),
	// and the bridge fills HA.Holder itself.
	unnamed := map[string]bool{"JetStream.Enabled": true, "HA.Holder": true}
	for _, sub := range []struct {
		prefix string
		typ    reflect.Type
	}{{"JetStream.", reflect.TypeFor[bridge.JetStreamOptions]()}, {"HA.", reflect.TypeFor[bridge.HAOptions]()}, {"Idempotency.", reflect.TypeFor[bridge.IdempotencyOptions]()}} {
		for f := range sub.typ.Fields() {
			if _, ok := optionKeys[sub.prefix+f.Name]; !ok && !unnamed[sub.prefix+f.Name] {
				t.Errorf("bridge.Options.%s%s has no key in optionKeys", sub.prefix, f.Name)
			}
		}
	}
	for _, f := range []string{"Prefix", "ReplyPrefixes", "EventBuffer", "EventBufferBytes"} {
		if _, ok := optionKeys[f]; !ok {
			t.Errorf("bridge.Options.%s has no key in optionKeys", f)
		}
	}
}

// TestLoad_GenericSubject: servers[].actions.generic_subject is on by
// default; false reaches the bridge as NamedActionsOnly.
func TestLoad_GenericSubject(t *testing.T) {
	cfg := mustLoad(t, onePBX+"  - name: pbx2\n    url: tcp://a:b@h\n    actions: {generic_subject: false, deny: [Command]}\n", nil)
	got, _ := cfg.Bridge()
	if got[0].NamedActionsOnly || !got[1].NamedActionsOnly || len(got[1].ActionsDeny) != 1 {
		t.Errorf("NamedActionsOnly %v, %v (deny %v), want false by default and true for generic_subject: false", got[0].NamedActionsOnly, got[1].NamedActionsOnly, got[1].ActionsDeny)
	}
}
