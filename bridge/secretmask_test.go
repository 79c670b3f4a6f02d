package bridge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

func TestSecretMasker_NoneToMask(t *testing.T) {
	if s := newSecretMasker("", "ab"); s != nil {
		t.Fatalf("short secrets masked: %+v", s)
	}
	var s *secretMasker
	m := amiproto.NewAction("Ping")
	r := &amiproto.Response{Message: m}
	if s.inJSON([]byte("x")) || s.text("x") != "x" || s.message(m) != m || s.response(r) != r {
		t.Fatal("a nil masker changed something")
	}
}

func TestSecretMasker_MasksRawValuesWhateverTheirEscaping(t *testing.T) {
	for _, secret := range []string{"s3cret-Do-Not-Log!", `q"uo\te<&>`, "tab\there", "naïve€"} {
		t.Run(secret, func(t *testing.T) {
			s := newSecretMasker(secret, "")
			resp := &amiproto.Response{
				Message: amiproto.NewMessage(
					amiproto.Field{Key: "Response", Value: "Success"},
					amiproto.Field{Key: "EventList", Value: "start"},
					amiproto.Field{Key: "Line-000001-000000", Value: "secret=" + secret},
				),
				Events: []*amiproto.Message{
					amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "X"}, amiproto.Field{Key: "Val", Value: "none"}),
					amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "X"}, amiproto.Field{Key: "Val", Value: secret + secret}, amiproto.Field{Key: secret, Value: "key"}),
				},
				Complete: amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "XComplete"}, amiproto.Field{Key: "EventList", Value: "Complete"}),
			}
			body := appendReply(nil, "pbx1", resp, replyOptions{parts: true})
			if !s.inJSON(body) {
				t.Fatalf("inJSON missed the secret in %s", body)
			}
			masked := s.response(resp)
			out := appendReply(nil, "pbx1", masked, replyOptions{parts: true})
			if s.inJSON(out) || strings.Contains(string(out), secret) {
				t.Fatalf("masked reply still holds the secret: %s", out)
			}
			var r replyBody
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("masked reply is not JSON: %v: %s", err, out)
			}
			if r.Response["Line-000001-000000"] != "secret="+secretMask || r.Events[1]["Val"] != secretMask+secretMask || r.Events[1][secretMask] != "key" {
				t.Errorf("masked reply %s", out)
			}
			if masked.Events[0] != resp.Events[0] || masked.Complete != resp.Complete {
				t.Error("messages without the secret were copied")
			}
			if !strings.Contains(resp.Get("Line-000001-000000"), secret) {
				t.Error("masking changed the response it was given")
			}
			if s.response(masked) != masked {
				t.Error("a response without the secret was copied")
			}
		})
	}
}

// TestSecretMasker_LongestFirst: a secret inside another is not left
// half-masked, whatever order they came in.
func TestSecretMasker_LongestFirst(t *testing.T) {
	s := newSecretMasker("abc", "xxabcxx")
	if got := s.text("1 xxabcxx 2 abc"); got != "1 "+secretMask+" 2 "+secretMask {
		t.Errorf("got %q", got)
	}
}

// BenchmarkReplySecretScan is what masking adds to a reply that holds no
// secret: one scan of the encoded reply.
func BenchmarkReplySecretScan(b *testing.B) {
	resp := &amiproto.Response{Message: amiproto.NewMessage(
		amiproto.Field{Key: "Response", Value: "Success"}, amiproto.Field{Key: "EventList", Value: "start"})}
	for i := range 1000 {
		resp.Events = append(resp.Events, amiproto.NewAction("CoreShowChannel",
			"Channel", fmt.Sprintf("PJSIP/%d-0000abcd", i), "ChannelState", "6", "ChannelStateDesc", "Up",
			"CallerIDNum", "100", "Context", "default", "Exten", "200", "Uniqueid", "1700000000.123", "Application", "Dial", "ApplicationData", "PJSIP/200,30"))
	}
	resp.Complete = amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "CoreShowChannelsComplete"}, amiproto.Field{Key: "ListItems", Value: "1000"})
	s := newSecretMasker("s3cret-Do-Not-Log!")
	buf := appendReply(nil, "pbx1", resp, replyOptions{parts: true})
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			buf = appendReply(buf[:0], "pbx1", resp, replyOptions{parts: true})
		}
	})
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			if s.inJSON(buf) {
				b.Fatal("found a secret")
			}
		}
	})
	b.Run("encode+scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			buf = appendReply(buf[:0], "pbx1", resp, replyOptions{parts: true})
			if s.inJSON(buf) {
				b.Fatal("found a secret")
			}
		}
	})
}
