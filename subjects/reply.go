package subjects

import "encoding/json"

// The error codes of action replies, as in HTTP. A success has no code
// (no Reply.Error); metrics count it as 200.
const (
	CodeBadRequest  = 400 // not JSON, no Action, a value of the wrong type, CR/LF/NUL
	CodeForbidden   = 403 // the action policy refused it
	CodeConflict    = 409 // an Ami-Idempotency-Key already used with another request body
	CodeTooLarge    = 413 // the reply exceeds the NATS max payload and no streaming was asked, or a list exceeds the reply's entry or byte bound
	CodeAMIError    = 422 // Asterisk answered "Response: Error"
	CodeUnavailable = 503 // the PBX is not connected, the connection was lost, or the bridge is stopping
	CodeTimeout     = 504 // no answer in time
)

// Reply is the JSON body of the answer to an action request, when it is
// not streamed:
//
//	{"server":…,"error":{"code":N,"message":…},"response":{…},"events":[…],"complete":{…},"output":"…"}
//
// An AMI message is a JSON object with its fields in wire order; a key
// that repeats has an array of its values.
type Reply struct {
	Server string `json:"server"`
	// Error is set only on failure; its code is also in the
	// HeaderErrorCode header.
	Error *ReplyError `json:"error,omitempty"`
	// Response is set whenever Asterisk answered.
	Response json.RawMessage `json:"response,omitempty"`
	// Events and Complete are set only for a list (a Collection): its
	// entry events in order, and its completing event. With HeaderWait,
	// Events alone holds the awaited event.
	Events   []json.RawMessage `json:"events,omitempty"`
	Complete json.RawMessage   `json:"complete,omitempty"`
	// Output is set only for Command output, whose Output fields are then
	// left out of Response.
	Output *string `json:"output,omitempty"`
}

// ReplyError says why an action failed: Code is one of the Code
// constants.
type ReplyError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}
