package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// field is one key of an AMI message rendered as JSON: a string, or an
// array of strings for a key repeated on the wire.
type field struct {
	Key    string
	Values []string
	Array  bool
}

// fields is a JSON object read in order.
type fields []field

// get returns the (first) value of key, matched exactly as Asterisk spells
// it, and whether it is there.
func (fs fields) get(key string) (string, bool) {
	for _, f := range fs {
		if f.Key == key && len(f.Values) > 0 {
			return f.Values[0], true
		}
	}
	return "", false
}

func (fs fields) value(key string) string {
	v, _ := fs.get(key)
	return v
}

func (fs fields) String() string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		if f.Array {
			fmt.Fprintf(&b, "%s: %q", f.Key, f.Values)
		} else {
			fmt.Fprintf(&b, "%s: %q", f.Key, f.Values[0])
		}
	}
	return "{" + b.String() + "}"
}

// parseFields reads a JSON object whose values are strings or arrays of
// strings, keeping the order of its keys: the encoding of an AMI message.
func parseFields(data []byte) (fields, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("want a JSON object, got %v", tok)
	}
	var out fields
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		f := field{Key: tok.(string)}
		tok, err = dec.Token()
		if err != nil {
			return nil, err
		}
		switch v := tok.(type) {
		case string:
			f.Values = []string{v}
		case json.Delim:
			if v != '[' {
				return nil, fmt.Errorf("key %q: want a string or an array of strings, got an object", f.Key)
			}
			f.Array = true
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return nil, err
				}
				s, ok := tok.(string)
				if !ok {
					return nil, fmt.Errorf("key %q: array element %v is not a string", f.Key, tok)
				}
				f.Values = append(f.Values, s)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("key %q: want a string or an array of strings, got %T", f.Key, tok)
		}
		out = append(out, f)
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return out, nil
}

// reply is the answer to an action request, read according to the
// contract: {"server","error":{"code","message"},"response","events",
// "complete","output"}.
type reply struct {
	msg  *nats.Msg
	keys []string // top-level keys, in order

	Server   string
	Code     int    // 0 unless "error" is there
	Message  string // error.message
	Response fields
	Events   []fields
	Complete fields
	Output   *string

	// From the Nats-Service-Error and Nats-Service-Error-Code headers.
	HeaderCode    string
	HeaderMessage string
}

func (r *reply) has(key string) bool {
	for _, k := range r.keys {
		if k == key {
			return true
		}
	}
	return false
}

func (r *reply) String() string {
	return fmt.Sprintf("headers %v body %s", r.msg.Header, truncate(r.msg.Data, 2048))
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + fmt.Sprintf("… (%d bytes)", len(b))
}

// parseReply reads a reply body; the shape checks that hold for every
// reply are made by checkReply.
func parseReply(m *nats.Msg) (*reply, error) {
	r := &reply{msg: m}
	if m.Header != nil {
		r.HeaderCode = m.Header.Get("Nats-Service-Error-Code")
		r.HeaderMessage = m.Header.Get("Nats-Service-Error")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(m.Data, &top); err != nil {
		return r, fmt.Errorf("reply is not a JSON object: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(m.Data))
	dec.Token()
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return r, err
		}
		r.keys = append(r.keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return r, err
		}
	}
	if raw, ok := top["server"]; ok {
		if err := json.Unmarshal(raw, &r.Server); err != nil {
			return r, fmt.Errorf("server: %v", err)
		}
	}
	if raw, ok := top["error"]; ok {
		var e struct {
			Code    *int    `json:"code"`
			Message *string `json:"message"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Code == nil || e.Message == nil {
			return r, fmt.Errorf("error: want {\"code\":N,\"message\":\"…\"}, got %s", raw)
		}
		r.Code, r.Message = *e.Code, *e.Message
	}
	var err error
	if raw, ok := top["response"]; ok {
		if r.Response, err = parseFields(raw); err != nil {
			return r, fmt.Errorf("response: %v", err)
		}
	}
	if raw, ok := top["events"]; ok {
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return r, fmt.Errorf("events: %v", err)
		}
		for i, ev := range list {
			fs, err := parseFields(ev)
			if err != nil {
				return r, fmt.Errorf("events[%d]: %v", i, err)
			}
			r.Events = append(r.Events, fs)
		}
	}
	if raw, ok := top["complete"]; ok {
		if r.Complete, err = parseFields(raw); err != nil {
			return r, fmt.Errorf("complete: %v", err)
		}
	}
	if raw, ok := top["output"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return r, fmt.Errorf("output: %v", err)
		}
		r.Output = &s
	}
	return r, nil
}

// request sends body to ami.<server>.action with the given headers and
// returns the reply, after the checks that hold for every reply: valid
// JSON of the contract's shape, the right server, error headers exactly
// when there is an error and agreeing with the body, no secret.
func (w *world) request(server, body string, hdr ...string) *reply {
	w.t.Helper()
	m := nats.NewMsg("ami." + server + ".action")
	m.Data = []byte(body)
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := w.nc.RequestMsg(m, replyTimeout)
	if err != nil {
		w.t.Fatalf("request %s %s: %v", m.Subject, body, err)
	}
	return w.checkReply(server, resp)
}

func (w *world) checkReply(server string, m *nats.Msg) *reply {
	w.t.Helper()
	if s := w.leakedSecret(m.Data); s != "" {
		w.t.Errorf("reply holds the secret %q", s)
	}
	for k, vs := range m.Header {
		for _, v := range vs {
			if s := w.leakedSecret([]byte(k + ": " + v)); s != "" {
				w.t.Errorf("reply header holds the secret %q", s)
			}
		}
	}
	r, err := parseReply(m)
	if err != nil {
		w.t.Fatalf("%v\n%s", err, truncate(m.Data, 2048))
	}
	if r.Server != server {
		w.t.Errorf("reply server = %q, want %q (%s)", r.Server, server, r)
	}
	if len(r.keys) == 0 || r.keys[0] != "server" {
		w.t.Errorf("reply keys %v: want \"server\" first", r.keys)
	}
	if r.has("error") {
		if r.HeaderCode != strconv.Itoa(r.Code) {
			w.t.Errorf("Nats-Service-Error-Code = %q, body error.code = %d", r.HeaderCode, r.Code)
		}
		if r.HeaderMessage == "" {
			w.t.Errorf("error reply without a Nats-Service-Error header: %s", r)
		}
	} else if r.HeaderCode != "" || r.HeaderMessage != "" {
		w.t.Errorf("success reply with error headers: %s", r)
	}
	if r.has("events") != r.has("complete") {
		w.t.Errorf("a reply has both events and complete or neither: keys %v", r.keys)
	}
	return r
}

// wantCode fails the test unless r is an error reply with code.
func wantCode(t *testing.T, r *reply, code int) {
	t.Helper()
	if r.Code != code {
		t.Fatalf("code = %d, want %d: %s", r.Code, code, r)
	}
	if r.Message == "" {
		t.Errorf("code %d with an empty error message", code)
	}
}

// wantSuccess fails the test unless r is a success reply.
func wantSuccess(t *testing.T, r *reply) {
	t.Helper()
	if r.has("error") {
		t.Fatalf("want a success reply, got %s", r)
	}
	if !r.has("response") {
		t.Fatalf("success reply without a response: %s", r)
	}
}
