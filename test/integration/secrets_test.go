package integration

import (
	"bytes"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestSecrets_NeverInLogsRepliesOrStatus runs the bridge at its most
// verbose log level with secrets that need escaping, given in each of the
// three ways (URL, secret_env, secret_file), with MD5 and plain login, a
// wrong secret, and a NATS password; it connects, fails a login, answers
// actions and stops. No form of any secret may appear in its output, in a
// reply, in a status (the world checks all three) or on an HTTP endpoint.
func TestSecrets_NeverInLogsRepliesOrStatus(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{user: "bridge-user", pass: "nats-pass:@/%20 é"})
	odd := func(tag string) string { return w.newSecret(tag) + `:@/%41 "q" é+` }
	mk := func(name string) *pbx {
		secret := odd(name)
		p := w.startPBX(name, amitest.Config{
			Profile:       amitest.Asterisk22,
			Users:         map[string]amitest.User{amiUser: {Secret: secret, Write: true}},
			AuthFailDelay: -1,
		})
		p.secret = secret
		return p
	}
	pu, pe, pf, pw := mk("s-url"), mk("s-env"), mk("s-file"), mk("s-wrong")
	su := w.serverFor("s-url", pu, viaURL)
	se := w.serverFor("s-env", pe, viaEnv)
	se.Auth = "md5"
	sf := w.serverFor("s-file", pf, viaFile)
	sw := w.serverAt("s-wrong", pw.Addr(), odd("wrong"), viaURL)
	cfg := w.config(su, se, sf, sw)
	cfg.Log.Level = "trace"
	cfg.NATS.User, cfg.NATS.Password = "bridge-user", "nats-pass:@/%20 é"
	b := w.startBridge(withHTTP(cfg))
	w.waitReady("s-url", "s-env", "s-file")
	w.waitState("s-wrong", 0, readyTimeout, "auth_failed")

	for _, s := range []string{"s-url", "s-env", "s-file"} {
		wantSuccess(t, w.request(s, `{"Action":"Ping"}`))
		wantCode(t, w.request(s, `{"Action":"NoSuchAction"}`), 422)
		wantSuccess(t, w.request(s, `{"Action":"Command","Command":"core show version"}`))
	}
	w.wantNoResponders("s-wrong")
	w.checkEndpointsHoldNoSecret(b.httpBase(t), "s-url", "s-env", "s-file", "s-wrong")
	// A reconnect logs the session's life once more.
	mark := w.status.len()
	pu.DropConnections()
	i, _ := w.waitState("s-url", mark, readyTimeout, "disconnected")
	w.waitState("s-url", i+1, readyTimeout, "connected")

	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	// The cleanup greps the log; make sure there is a log to grep.
	if out := b.log.Bytes(); !bytes.Contains(out, []byte("s-wrong")) || !bytes.Contains(out, []byte("ready")) {
		t.Errorf("the log does not mention the PBXes; is the level honoured?\n%s", truncate(out, 4096))
	}
}
