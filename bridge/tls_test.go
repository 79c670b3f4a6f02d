package bridge

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// TestStatus_TLSVerificationHint: a PBX whose certificate the bridge cannot
// verify leaves the session disconnected with x509's reason and what
// fixes it, in the status and the log: tls.ca_file for a self-signed
// certificate, tls.server_name for a name the certificate lacks.
func TestStatus_TLSVerificationHint(t *testing.T) {
	cert, pool, err := amitest.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		client *tls.Config
		want   []string
	}{
		{"self-signed", &tls.Config{}, []string{"certificate signed by unknown authority", "in tls.ca_file"}},
		{"other name", &tls.Config{RootCAs: pool, ServerName: "pbx.example"}, []string{"pbx.example", "set tls.server_name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := newWorld(t, withPBX(amitest.Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}),
				withServer(func(sc *ServerConfig) { sc.TLS = tc.client }))
			logs := tw.logs
			st := tw.w.waitState(subjects.StateDisconnected)
			for _, want := range tc.want {
				if !strings.Contains(st.Error, want) {
					t.Errorf("status error %q lacks %q", st.Error, want)
				}
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
		})
	}
}
