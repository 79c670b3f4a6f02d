package config

import (
	"testing"

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

// TestBridgeServers_ReplyLimits: servers[].max_reply_entries and
// max_reply_bytes reach the bridge as loaded.
func TestBridgeServers_ReplyLimits(t *testing.T) {
	s := DefaultServer()
	s.Name, s.MaxReplyEntries, s.MaxReplyBytes = "pbx1", 7, 4096
	if got := servers(s)[0]; got.MaxReplyEntries != 7 || got.MaxReplyBytes != 4096 {
		t.Errorf("MaxReplyEntries %d, MaxReplyBytes %d, want the configured 7 and 4096", got.MaxReplyEntries, got.MaxReplyBytes)
	}
}
