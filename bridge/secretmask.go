package bridge

import (
	"bytes"
	"slices"
	"strings"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// secretMask replaces the bridge's own AMI secret in replies, the same
// fixed text the configuration uses for every secret it shows.
const secretMask = "xxxxx"

// minMaskedSecret is the shortest secret masked: masking every "a" of a
// reply would garble it and protect nothing, as for logs (config's
// minMasked).
const minMaskedSecret = 3

// secretMasker keeps the bridge's AMI secret for a PBX out of the replies
// to its actions: GetConfig of manager.conf, Getvar of AST_CONFIG(), a
// Command whose output quotes it. Masking works on the raw values, before
// they are encoded, so that no JSON escape is cut in half; a reply is
// encoded first, and looked at again only when its JSON holds a secret, so
// that the usual reply costs one bytes.Index per secret and form.
type secretMasker struct {
	secrets []string // longest first, so that none is left half-masked by a shorter one inside it
	forms   [][]byte // each secret as it is and JSON-escaped, as AppendJSONString writes it
}

// newSecretMasker masks the non-empty secrets of at least minMaskedSecret
// bytes; nil when there is none.
func newSecretMasker(secrets ...string) *secretMasker {
	var s secretMasker
	for _, sec := range secrets {
		if len(sec) >= minMaskedSecret && !slices.Contains(s.secrets, sec) {
			s.secrets = append(s.secrets, sec)
		}
	}
	if len(s.secrets) == 0 {
		return nil
	}
	slices.SortFunc(s.secrets, func(a, b string) int { return len(b) - len(a) })
	for _, sec := range s.secrets {
		esc := amiproto.AppendJSONString(nil, sec)
		esc = esc[1 : len(esc)-1]
		s.forms = append(s.forms, []byte(sec))
		if !bytes.Equal(esc, []byte(sec)) {
			s.forms = append(s.forms, esc)
		}
	}
	return &s
}

// inJSON reports whether encoded may hold a secret. It may say yes for a
// secret that only the JSON syntax around values spells; never no for one
// that a value holds.
func (s *secretMasker) inJSON(encoded []byte) bool {
	if s == nil {
		return false
	}
	for _, f := range s.forms {
		if bytes.Contains(encoded, f) {
			return true
		}
	}
	return false
}

// text returns v with every secret replaced by secretMask.
func (s *secretMasker) text(v string) string {
	if s == nil {
		return v
	}
	for _, sec := range s.secrets {
		if strings.Contains(v, sec) {
			v = strings.ReplaceAll(v, sec, secretMask)
		}
	}
	return v
}

// message returns m with every secret in its keys and values masked, or
// m itself when it holds none. m is never changed: its text may be shared.
func (s *secretMasker) message(m *amiproto.Message) *amiproto.Message {
	if s == nil || m == nil {
		return m
	}
	var fs []amiproto.Field
	for i := range m.Len() {
		f := m.Field(i)
		k, v := s.text(f.Key), s.text(f.Value)
		if fs == nil && (k != f.Key || v != f.Value) {
			fs = m.Fields()
		}
		if fs != nil {
			fs[i] = amiproto.Field{Key: k, Value: v}
		}
	}
	if fs == nil {
		return m
	}
	return amiproto.NewMessage(fs...)
}

// response returns r with every secret masked in all its messages, or r
// itself when it holds none.
func (s *secretMasker) response(r *amiproto.Response) *amiproto.Response {
	if s == nil || r == nil {
		return r
	}
	out := &amiproto.Response{Message: s.message(r.Message), Complete: s.message(r.Complete)}
	changed := out.Message != r.Message || out.Complete != r.Complete
	for i, ev := range r.Events {
		if m := s.message(ev); m != ev {
			if out.Events == nil {
				out.Events = slices.Clone(r.Events)
			}
			out.Events[i] = m
			changed = true
		}
	}
	if !changed {
		return r
	}
	if out.Events == nil {
		out.Events = r.Events
	}
	return out
}
