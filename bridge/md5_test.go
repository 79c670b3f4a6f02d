package bridge

import (
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// TestBridge_MD5AuthNeverPutsTheSecretOnTheWire runs a bridge with Auth
// "md5" against a PBX that refuses plain secrets and records what it
// receives: the session connects and answers an action, and the secret
// never crossed the wire.
func TestBridge_MD5AuthNeverPutsTheSecretOnTheWire(t *testing.T) {
	tw := newWorld(t, withPBX(amitest.Config{RequireMD5: true, RecordReceived: true}),
		withServer(func(sc *ServerConfig) { sc.Auth = "md5" }))
	tw.w.waitState(subjects.StateConnected)
	cc, pbx := tw.cc, tw.pbx
	if m := request(t, cc, "ami.pbx1.action", `{"Action":"Ping"}`, nil); !strings.Contains(string(m.Data), `"Pong"`) {
		t.Fatalf("Ping reply %s", m.Data)
	}
	wire := string(pbx.Received())
	if !strings.Contains(wire, "AuthType: MD5\r\n") || !strings.Contains(wire, "Key: ") {
		t.Fatalf("no MD5 login on the wire:\n%s", wire)
	}
	if strings.Contains(wire, testSecret) || strings.Contains(strings.ToLower(wire), "secret:") {
		t.Fatalf("the secret crossed the wire:\n%s", wire)
	}
}
