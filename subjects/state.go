package subjects

// STUB of the wiring branch: the model branch owns this file and replaces
// it at merge. It holds only what the wiring needs to build and test.

import (
	"errors"
	"strings"
	"time"
)

// Kinds of state entries: the second token of a state key.
const (
	KindChannels = "channels"
	KindBridges  = "bridges"
	KindQueues   = "queues"
	KindDevices  = "devices"
	KindCalls    = "calls"
)

// callToken follows the server token in a call record's subject.
const callToken = "call"

// keySafe reports whether c stands for itself in a state key token.
func keySafe(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '/'
}

// EscapeKeyToken escapes s for one token of a KV key: every byte outside
// [-/_A-Za-z0-9] becomes =XX (uppercase hex); "" becomes "=".
func EscapeKeyToken(s string) string {
	if s == "" {
		return "="
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keySafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xF])
	}
	return b.String()
}

// UnescapeKeyToken reverses EscapeKeyToken.
func UnescapeKeyToken(tok string) (string, error) {
	if tok == "=" {
		return "", nil
	}
	if tok == "" {
		return "", ErrBadToken
	}
	b := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if keySafe(c) {
			b = append(b, c)
			continue
		}
		if c != '=' || i+2 >= len(tok) {
			return "", ErrBadToken
		}
		hi, ok1 := unhex(tok[i+1])
		lo, ok2 := unhex(tok[i+2])
		if !ok1 || !ok2 {
			return "", ErrBadToken
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), nil
}

// StateKey returns the KV key of one object: <server>.<kind>.<id escaped>.
func StateKey(server, kind, id string) string {
	return server + "." + kind + "." + EscapeKeyToken(id)
}

// ParseStateKey reverses StateKey.
func ParseStateKey(key string) (server, kind, id string, err error) {
	parts := strings.SplitN(key, ".", 3)
	if len(parts) != 3 {
		return "", "", "", errors.New("subjects: not a state key: " + key)
	}
	id, err = UnescapeKeyToken(parts[2])
	return parts[0], parts[1], id, err
}

// CallRecordSubject is the subject of a call's record:
// <prefix>.<server>.call.<Linkedid escaped>.
func CallRecordSubject(prefix, server, linkedid string) string {
	return prefix + "." + server + "." + callToken + "." + EscapeToken(linkedid)
}

// StateChannel is the value of a channels key.
type StateChannel struct {
	Server   string    `json:"server"`
	Uniqueid string    `json:"uniqueid"`
	Channel  string    `json:"channel"`
	Linkedid string    `json:"linkedid"`
	Created  time.Time `json:"created,omitzero"`
}

// CallParty is a caller or a callee.
type CallParty struct {
	Number  string `json:"number,omitempty"`
	Name    string `json:"name,omitempty"`
	Channel string `json:"channel,omitempty"`
}

// CallRecord is a call: in progress as the value of a calls key, finished
// on the call record subject.
type CallRecord struct {
	Server   string    `json:"server"`
	Linkedid string    `json:"linkedid"`
	Start    time.Time `json:"start,omitzero"`
	End      time.Time `json:"end,omitzero"`
	Caller   CallParty `json:"caller"`
	Channels []string  `json:"channels,omitempty"`
	EndSeen  bool      `json:"end_seen"`
}
