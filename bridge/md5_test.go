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
	ns := startNATS(t, natsOptions{})
	nc, cc := connect(t, ns), connect(t, ns)
	pbx := startPBX(t, amitest.Config{RequireMD5: true, RecordReceived: true})
	w := watchStatus(t, cc, "ami", "pbx1")
	sc := fastServer("pbx1", pbx)
	sc.Auth = "md5"
	startBridge(t, nc, []ServerConfig{sc}, Options{})
	w.waitState(subjects.StateConnected)
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
