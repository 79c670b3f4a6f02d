package subjects

import (
	"errors"
	"strings"
	"time"
)

// The live state of a PBX is kept in a JetStream KV bucket (AMI_STATE by
// default), one key per object:
//
//	<server>.channels.<Uniqueid>       StateChannel
//	<server>.bridges.<BridgeUniqueid>  StateBridge
//	<server>.queues.<Queue>            StateQueue
//	<server>.devices.<Device>          StateDevice
//	<server>.calls.<Linkedid>          CallRecord of a call in progress
//
// KV keys allow only [-/_=.A-Za-z0-9] and '.' separates tokens, so each
// token is escaped: every byte outside [-/_A-Za-z0-9] becomes =XX (two
// uppercase hex digits), '=' and '.' included, and the empty token is a
// lone "=". "1733600000.12" is written "1733600000=2E12", "SIP/100" stays
// as it is. A watch filter such as "pbx1.channels.>" selects one kind.

// The kinds of state object: the second token of a state key.
const (
	KindChannels = "channels"
	KindBridges  = "bridges"
	KindQueues   = "queues"
	KindDevices  = "devices"
	KindCalls    = "calls"
)

// Kinds lists every kind, in the order of the keys above.
var Kinds = []string{KindChannels, KindBridges, KindQueues, KindDevices, KindCalls}

// keyEmpty stands for the empty token: '=' alone never comes out of
// escaping a non-empty token, since '=' is always written "=3D".
const keyEmpty = "="

// keySafe[b] is true for the bytes that stand for themselves in a key token.
var keySafe = func() (t [256]bool) {
	t = safe
	t['/'] = true
	return t
}()

// StateKey returns the KV key of one object of server: <server>.<kind>.<id>,
// server and id escaped as key tokens. kind is one of the Kind constants.
func StateKey(server, kind, id string) string {
	b := make([]byte, 0, len(server)+len(kind)+len(id)+16)
	b = AppendKeyToken(b, server)
	b = append(b, '.')
	b = append(b, kind...)
	b = append(b, '.')
	return string(AppendKeyToken(b, id))
}

// EscapeKeyToken returns s escaped as one KV key token: bytes outside
// [-/_A-Za-z0-9] become =XX (uppercase hex) and "" becomes "=".
func EscapeKeyToken(s string) string {
	if s != "" && !keyNeedsEscape(s) {
		return s
	}
	return string(AppendKeyToken(make([]byte, 0, len(s)+8), s))
}

// AppendKeyToken appends EscapeKeyToken(s) to dst and returns the extended
// buffer. It allocates nothing when dst has room.
func AppendKeyToken(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, keyEmpty...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keySafe[c] {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '=', upperHex[c>>4], upperHex[c&0xF])
	}
	return dst
}

func keyNeedsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if !keySafe[s[i]] {
			return true
		}
	}
	return false
}

// ErrBadKey is returned by ParseStateKey and UnescapeKeyToken for a key
// StateKey cannot have produced.
var ErrBadKey = errors.New("subjects: malformed state key")

// UnescapeKeyToken reverses EscapeKeyToken. It accepts only what
// EscapeKeyToken produces, so every name has exactly one spelling.
func UnescapeKeyToken(tok string) (string, error) {
	if tok == keyEmpty {
		return "", nil
	}
	if tok == "" {
		return "", ErrBadKey
	}
	if strings.IndexByte(tok, '=') < 0 {
		if keyNeedsEscape(tok) {
			return "", ErrBadKey
		}
		return tok, nil
	}
	b := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if keySafe[c] {
			b = append(b, c)
			continue
		}
		if c != '=' || i+2 >= len(tok) {
			return "", ErrBadKey
		}
		hi, ok1 := unhex(tok[i+1])
		lo, ok2 := unhex(tok[i+2])
		v := hi<<4 | lo
		if !ok1 || !ok2 || keySafe[v] {
			return "", ErrBadKey
		}
		b = append(b, v)
		i += 2
	}
	return string(b), nil
}

// ParseStateKey splits a key StateKey returned into its server, kind and
// id, unescaped. It fails on a key of another shape or an unknown kind.
func ParseStateKey(key string) (server, kind, id string, err error) {
	st, rest, ok := strings.Cut(key, ".")
	if !ok {
		return "", "", "", ErrBadKey
	}
	kind, it, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(it, '.') >= 0 {
		return "", "", "", ErrBadKey
	}
	known := false
	for _, k := range Kinds {
		known = known || k == kind
	}
	if !known {
		return "", "", "", ErrBadKey
	}
	if server, err = UnescapeKeyToken(st); err != nil {
		return "", "", "", err
	}
	if id, err = UnescapeKeyToken(it); err != nil {
		return "", "", "", err
	}
	return server, kind, id, nil
}

// CallRecordSubject returns the subject of the record of one call:
// <prefix>.<server>.call.<Linkedid>, the Linkedid escaped as a subject
// token (EscapeToken): "1733600000.12" is written "1733600000%2E12".
func CallRecordSubject(prefix, server, linkedid string) string {
	return prefix + "." + server + ".call." + EscapeToken(linkedid)
}

// AllCallRecords returns the subject that matches the call records of every
// PBX: <prefix>.*.call.>.
func AllCallRecords(prefix string) string {
	return prefix + ".*.call.>"
}

// The values below are JSON. Times are RFC 3339 in UTC, with at most
// millisecond precision; a zero time is left out.

// Party is one side's identity as Asterisk shows it: a caller ID or a
// connected line. Asterisk's "<unknown>" is written as "".
type Party struct {
	Number string `json:"number,omitempty"`
	Name   string `json:"name,omitempty"`
}

// StateChannel is the value of <server>.channels.<Uniqueid>.
type StateChannel struct {
	Uniqueid      string            `json:"uniqueid"`
	Linkedid      string            `json:"linkedid"`
	Channel       string            `json:"channel"`        // the name, e.g. PJSIP/100-00000001
	State         string            `json:"state"`          // ChannelStateDesc: Down, Ring, Ringing, Up, Busy…
	StateCode     int               `json:"state_code"`     // ChannelState
	CallerID      Party             `json:"caller_id"`      // CallerIDNum, CallerIDName
	ConnectedLine Party             `json:"connected_line"` // ConnectedLineNum, ConnectedLineName
	AccountCode   string            `json:"account_code,omitempty"`
	Language      string            `json:"language,omitempty"`
	Context       string            `json:"context"`
	Exten         string            `json:"exten"`
	Priority      int               `json:"priority"`
	Application   string            `json:"application,omitempty"` // the dialplan application running, from Newexten
	AppData       string            `json:"app_data,omitempty"`
	Bridge        string            `json:"bridge,omitempty"` // BridgeUniqueid of the bridge the channel is in
	Created       time.Time         `json:"created,omitzero"`
	Answered      time.Time         `json:"answered,omitzero"` // first time the channel was Up
	Vars          map[string]string `json:"vars,omitempty"`    // the channelvars (ChanVariable headers) and VarSet of them
}

// BridgeMember is one channel in a bridge.
type BridgeMember struct {
	Uniqueid string `json:"uniqueid"`
	Channel  string `json:"channel"`
}

// StateBridge is the value of <server>.bridges.<BridgeUniqueid>.
type StateBridge struct {
	BridgeUniqueid string         `json:"bridge_uniqueid"`
	Type           string         `json:"type,omitempty"`       // BridgeType: basic, holding…
	Technology     string         `json:"technology,omitempty"` // BridgeTechnology: simple_bridge, native_rtp, softmix…
	Creator        string         `json:"creator,omitempty"`
	Name           string         `json:"name,omitempty"`
	Created        time.Time      `json:"created,omitzero"`
	Members        []BridgeMember `json:"members"`
}

// QueueMember is one member (agent) of a queue.
type QueueMember struct {
	Interface      string `json:"interface"` // Location (13, 22) or Interface (QueueMember* events)
	Name           string `json:"name,omitempty"`
	StateInterface string `json:"state_interface,omitempty"`
	Membership     string `json:"membership,omitempty"` // static, dynamic, realtime
	Penalty        int    `json:"penalty"`
	CallsTaken     int    `json:"calls_taken"`
	LastCall       int64  `json:"last_call,omitempty"` // Unix seconds
	InCall         bool   `json:"in_call"`
	Status         int    `json:"status"` // Asterisk's device state number: 1 not in use, 2 in use, 6 ringing…
	Paused         bool   `json:"paused"`
	PausedReason   string `json:"paused_reason,omitempty"`
}

// QueueCaller is one caller waiting in a queue.
type QueueCaller struct {
	Uniqueid string    `json:"uniqueid,omitempty"`
	Channel  string    `json:"channel"`
	Position int       `json:"position"`
	CallerID Party     `json:"caller_id"`
	Joined   time.Time `json:"joined,omitzero"` // the wait is now minus Joined
}

// StateQueue is the value of <server>.queues.<Queue>.
type StateQueue struct {
	Queue            string        `json:"queue"`
	Strategy         string        `json:"strategy,omitempty"`
	Max              int           `json:"max"`
	Calls            int           `json:"calls"` // callers waiting, as Asterisk counts them
	Holdtime         int           `json:"holdtime"`
	TalkTime         int           `json:"talk_time"`
	Completed        int           `json:"completed"`
	Abandoned        int           `json:"abandoned"`
	ServiceLevel     int           `json:"service_level"`
	ServiceLevelPerf string        `json:"service_level_perf,omitempty"`
	Weight           int           `json:"weight"`
	Members          []QueueMember `json:"members"`
	Callers          []QueueCaller `json:"callers"`
}

// StateDevice is the value of <server>.devices.<Device>.
type StateDevice struct {
	Device string `json:"device"`
	State  string `json:"state"` // NOT_INUSE, INUSE, BUSY, UNAVAILABLE, RINGING…
}

// The dispositions of a call record, as Asterisk's CDR engine names them
// (ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION).
const (
	DispositionAnswered   = "answered"
	DispositionNoAnswer   = "no_answer"
	DispositionBusy       = "busy"
	DispositionFailed     = "failed"
	DispositionCongestion = "congestion"
)

// The kinds of transfer.
const (
	TransferBlind    = "blind"
	TransferAttended = "attended"
)

// CallParty is a caller or a callee of a call.
type CallParty struct {
	Number  string `json:"number,omitempty"`
	Name    string `json:"name,omitempty"`
	Channel string `json:"channel,omitempty"`
}

// CallQueue is the queue a call went through.
type CallQueue struct {
	Name  string `json:"name"`
	WaitS int    `json:"wait_s"`          // seconds from joining to an agent's answer (or to leaving)
	Agent string `json:"agent,omitempty"` // the member who answered (MemberName, else Interface)
}

// CallTransfer is one transfer of a call.
type CallTransfer struct {
	Kind string    `json:"kind"` // TransferBlind or TransferAttended
	At   time.Time `json:"at,omitzero"`
	By   string    `json:"by,omitempty"` // the transferer's channel
	To   string    `json:"to,omitempty"` // blind: exten@context; attended: the channel or app transferred to
}

// CallCdr is one Cdr event Asterisk sent for the call, as far as the record
// compares with it.
type CallCdr struct {
	Channel            string `json:"channel"`
	DestinationChannel string `json:"destination_channel,omitempty"`
	Disposition        string `json:"disposition"` // as Asterisk wrote it: ANSWERED, NO ANSWER…
	BillableS          int    `json:"billable_s"`
}

// CallRecord is one call, all channels of one Linkedid. The record of a
// finished call is published on CallRecordSubject; the call in progress
// is the value of <server>.calls.<Linkedid> (no end, no disposition).
type CallRecord struct {
	Server          string         `json:"server"`
	Linkedid        string         `json:"linkedid"`
	Start           time.Time      `json:"start,omitzero"`
	Answer          time.Time      `json:"answer,omitzero"`
	End             time.Time      `json:"end,omitzero"`
	DurationS       int            `json:"duration_s"`
	BillableS       int            `json:"billable_s"`
	Caller          CallParty      `json:"caller"`
	Callees         []CallParty    `json:"callees,omitempty"`
	Disposition     string         `json:"disposition,omitempty"`
	HangupCause     int            `json:"hangup_cause"`
	HangupCauseText string         `json:"hangup_cause_text,omitempty"`
	Queue           *CallQueue     `json:"queue,omitempty"`
	Channels        []string       `json:"channels"`
	Bridges         []string       `json:"bridges,omitempty"`
	Transfers       []CallTransfer `json:"transfers,omitempty"`
	// EndSeen is false when the call was closed by a reconciliation or by
	// a takeover that found its channels gone: End is then when the bridge
	// noticed, not when the call ended.
	EndSeen bool      `json:"end_seen"`
	Cdr     []CallCdr `json:"cdr,omitempty"`
}
