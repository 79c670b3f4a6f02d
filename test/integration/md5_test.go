package integration

import (
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestMD5Auth_TheSecretNeverCrossesTheWire runs the daemon with
// `auth: md5` against a PBX that refuses plain secrets and records every
// byte it receives: the session comes up and answers, and no form of the
// secret crossed the wire.
func TestMD5Auth_TheSecretNeverCrossesTheWire(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	p := w.startPBX("md5", amitest.Config{RequireMD5: true, RecordReceived: true, AuthFailDelay: -1})
	s := w.serverFor("md5", p, viaEnv)
	s.Auth = "md5"
	b := w.startBridge(w.config(s))
	w.waitReady("md5")
	wantSuccess(t, w.request("md5", `{"Action":"Ping"}`))
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	wire := string(p.Received())
	if !strings.Contains(wire, "AuthType: MD5\r\n") || !strings.Contains(wire, "Key: ") || !strings.Contains(wire, "Action: Logoff") {
		t.Fatalf("no MD5 login or Logoff on the wire:\n%s", wire)
	}
	if strings.Contains(strings.ToLower(wire), "secret:") {
		t.Fatalf("a Secret field crossed the wire:\n%s", wire)
	}
	if leak := w.leakedSecret([]byte(wire)); leak != "" {
		t.Fatalf("the secret crossed the wire as %q", leak)
	}
}
