package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// badRequest is a request the bridge refuses before anything reaches
// Asterisk: a 400.
type badRequest struct{ msg string }

// Error implements error.
func (e *badRequest) Error() string { return e.msg }

func badRequestf(format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf(format, args...)}
}

// decodeAction turns a JSON request into an AMI action. The object's keys
// become fields in the order they were written, after the Action line:
//
//   - a string, number or bool becomes one field; a number is kept as
//     written ("1e3" stays "1e3"), a bool is "true" or "false";
//   - an array becomes one field per element, the key repeated;
//   - an object becomes one "k=v" field per entry, sorted by k, as
//     Originate's Variable wants them;
//   - null, at any level, is left out.
//
// The Action key matches case-insensitively and its value must be an
// action name as Asterisk spells them (amiproto.ValidActionName), so that
// the policy and Asterisk see the same name. Anything else (not an object, trailing data, arrays or objects
// nested deeper, CR, LF or NUL anywhere, a key with ':' or whitespace) is
// a *badRequest.
func decodeAction(data []byte) (*amiproto.Message, error) { return decodeActionAs(data, "") }

// decodeActionAs is decodeAction for a request on the per-action subject
// of named: the body may be empty or leave Action out, and an Action it
// gives must be named exactly.
func decodeActionAs(data []byte, named string) (*amiproto.Message, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		if named != "" {
			return amiproto.NewAction(named), nil
		}
		return nil, badRequestf("empty request: send a JSON object with an Action")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, badRequestf("request is not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, badRequestf("request must be a JSON object")
	}
	fs := make([]amiproto.Field, 1, 8)
	haveAction := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badRequestf("request is not JSON: %v", err)
		}
		key := tok.(string) // object keys are always strings
		if strings.EqualFold(key, "Action") {
			name, err := decodeActionName(dec, haveAction)
			if err != nil {
				return nil, err
			}
			if named != "" && name != named {
				return nil, badRequestf("the body's Action %s differs from the subject's %s", quoteShort(name), named)
			}
			fs[0] = amiproto.Field{Key: "Action", Value: name}
			haveAction = true
			continue
		}
		if fs, err = appendValue(fs, dec, key); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, badRequestf("request is not JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequestf("request is not JSON: data after the object")
	}
	if !haveAction && named != "" {
		fs[0] = amiproto.Field{Key: "Action", Value: named}
	} else if !haveAction {
		return nil, badRequestf("request has no Action")
	}
	m := amiproto.NewMessage(fs...)
	if err := amiproto.ValidateMessage(m); err != nil {
		var ae *amiproto.ActionError
		if errors.As(err, &ae) {
			return nil, badRequestf("field %q: %s", ae.Key, ae.Reason)
		}
		return nil, badRequestf("invalid action: %v", err)
	}
	return m, nil
}

func decodeActionName(dec *json.Decoder, seen bool) (string, error) {
	if seen {
		return "", badRequestf("request has more than one Action")
	}
	tok, err := dec.Token()
	if err != nil {
		return "", badRequestf("request is not JSON: %v", err)
	}
	name, ok := tok.(string)
	if !ok {
		skipComposite(dec, tok)
		return "", badRequestf("Action must be a string")
	}
	if name == "" {
		return "", badRequestf("Action is empty")
	}
	if !amiproto.ValidActionName(name) {
		return "", badRequestf("Action %s is not an action name: want a letter, then letters, digits or '_', with no blank or control character (Asterisk would skip a leading one and run the action under a name the policy never saw)", quoteShort(name))
	}
	return name, nil
}

// maxQuoted bounds what an error message quotes of a requester's value.
const maxQuoted = 64

// quoteShort quotes s for an error message, cut after maxQuoted bytes.
func quoteShort(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "…"
	}
	return strconv.Quote(s)
}

// appendValue reads the value of key and appends its fields to dst.
func appendValue(dst []amiproto.Field, dec *json.Decoder, key string) ([]amiproto.Field, error) {
	tok, err := dec.Token()
	if err != nil {
		return dst, badRequestf("request is not JSON: %v", err)
	}
	if v, ok, err := scalar(tok, key); ok || err != nil {
		if err == nil && tok != nil {
			dst = append(dst, amiproto.Field{Key: key, Value: v})
		}
		return dst, err
	}
	switch tok.(json.Delim) {
	case '[':
		for dec.More() {
			tok, v, err := member(dec, key, "an array")
			if err != nil {
				return dst, err
			}
			if tok != nil {
				dst = append(dst, amiproto.Field{Key: key, Value: v})
			}
		}
	case '{':
		var kvs []string
		for dec.More() {
			tok, err := token(dec)
			if err != nil {
				return dst, err
			}
			name := tok.(string)
			tok, v, err := member(dec, key, "an object")
			if err != nil {
				return dst, err
			}
			if tok != nil {
				kvs = append(kvs, name+"="+v)
			}
		}
		// Sort on the name only, so "A=1" and "A=2" keep their order.
		slices.SortStableFunc(kvs, func(a, b string) int {
			an, _, _ := strings.Cut(a, "=")
			bn, _, _ := strings.Cut(b, "=")
			return strings.Compare(an, bn)
		})
		for _, kv := range kvs {
			dst = append(dst, amiproto.Field{Key: key, Value: kv})
		}
	}
	if _, err := dec.Token(); err != nil { // the closing ']' or '}'
		return dst, badRequestf("request is not JSON: %v", err)
	}
	return dst, nil
}

// token reads the next JSON token of a request.
func token(dec *json.Decoder) (json.Token, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, badRequestf("request is not JSON: %v", err)
	}
	return tok, nil
}

// member reads the next value inside key's array or object (in): a
// scalar, or null (tok nil), never a nested array or object.
func member(dec *json.Decoder, key, in string) (tok json.Token, v string, err error) {
	if tok, err = token(dec); err != nil {
		return nil, "", err
	}
	v, ok, err := scalar(tok, key)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", badRequestf("%q: %s may hold only strings, numbers and bools", key, in)
	}
	return tok, v, nil
}

// scalar converts a scalar token to its field value. ok is false for an
// array or object start; null gives ok with an empty value, and the caller
// leaves it out.
func scalar(tok json.Token, key string) (v string, ok bool, err error) {
	switch t := tok.(type) {
	case string:
		return t, true, nil
	case json.Number:
		return t.String(), true, nil
	case bool:
		return strconv.FormatBool(t), true, nil
	case nil:
		return "", true, nil
	case json.Delim:
		return "", false, nil
	}
	return "", false, badRequestf("%q: unexpected JSON token", key)
}

// skipComposite consumes the rest of an array or object whose opening
// token was just read, so the decoder stays usable. Errors surface on the
// next read.
func skipComposite(dec *json.Decoder, tok json.Token) {
	d, ok := tok.(json.Delim)
	if !ok || (d != '[' && d != '{') {
		return
	}
	for depth := 1; depth > 0; {
		t, err := dec.Token()
		if err != nil {
			return
		}
		if d, ok := t.(json.Delim); ok {
			if d == '[' || d == '{' {
				depth++
			} else {
				depth--
			}
		}
	}
}

// headerValue returns the first value of key, whose case is ignored:
// nats.Header is case-sensitive, people typing `nats req -H` are not.
func headerValue(h map[string][]string, key string) (string, bool) {
	if vs, ok := h[key]; ok && len(vs) > 0 {
		return vs[0], true
	}
	for k, vs := range h {
		if strings.EqualFold(k, key) && len(vs) > 0 {
			return vs[0], true
		}
	}
	return "", false
}

// requestTimeout returns the wait for one request: def, or the
// Ami-Timeout header capped at max.
func requestTimeout(h map[string][]string, def, max time.Duration) (time.Duration, error) {
	v, ok := headerValue(h, subjects.HeaderTimeout)
	if !ok {
		return def, nil
	}
	v = strings.TrimSpace(v)
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil || secs != secs { // NaN
			return 0, badRequestf("%s: %q is not a duration such as 2s or 1500ms", subjects.HeaderTimeout, v)
		}
		if secs*float64(time.Second) > float64(max) {
			return max, nil
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 {
		return 0, badRequestf("%s: %q is not a positive duration", subjects.HeaderTimeout, v)
	}
	return min(d, max), nil
}

// requestStream reports whether the Ami-Stream header asks for streaming.
func requestStream(h map[string][]string) (bool, error) {
	v, ok := headerValue(h, subjects.HeaderStream)
	if !ok {
		return false, nil
	}
	on, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, badRequestf("%s: %q is not true or false", subjects.HeaderStream, v)
	}
	return on, nil
}
