package amiproto

import (
	"context"
	"strconv"
)

// The helpers below build the actions clue/reactphp-ami offers and the ones
// used most today. As in pgproto3, an action with parameters is a struct
// whose Action method builds its Message, so no two strings can be
// swapped by mistake; Do sends it, the one way to send a typed action, and
// Response.Value reads an answer that comes down to one value (Getvar's
// Value, DBGet's Val). Any other action works through Request with no
// change to the library.

// Actioner is an action with typed parameters, such as Originate or
// Redirect.
type Actioner interface {
	// Action returns the action as a Message, ready for Request.
	Action() *Message
}

// Do sends a.Action() and waits for its answer, as Request does. With
// Originate and Async the answer only says the call was queued; its
// outcome comes later as an OriginateResponse event carrying the same
// ActionID.
func (c *Client) Do(ctx context.Context, a Actioner) (*Response, error) {
	return c.Request(ctx, a.Action())
}

// Ping checks that Asterisk answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Request(ctx, NewAction("Ping"))
	return err
}

// Command runs an Asterisk CLI command and returns its output, lines joined
// by "\n", in either framing: "Output:" lines (Asterisk 14 and later) or a
// "Response: Follows" block (Asterisk 13 and earlier).
func (c *Client) Command(ctx context.Context, command string) (string, error) {
	resp, err := c.Request(ctx, NewAction("Command", "Command", command))
	if resp == nil {
		return "", err
	}
	out, _ := resp.Output()
	return out, err
}

// EventMask sends the Events action, which sets the session's event mask:
// "on", "off" or classes such as "call,system".
func (c *Client) EventMask(ctx context.Context, mask string) (*Response, error) {
	return c.Request(ctx, NewAction("Events", "EventMask", mask))
}

// Challenge asks for an MD5 login challenge.
func (c *Client) Challenge(ctx context.Context) (string, error) {
	resp, err := c.Request(ctx, NewAction("Challenge", "AuthType", "MD5"))
	if err != nil {
		return "", err
	}
	return resp.Get("Challenge"), nil
}

// Login logs in a client dialed without a user. Dial logs in by itself when
// its URL names one.
func (c *Client) Login(ctx context.Context, user, secret string) error {
	return c.login(ctx, user, secret)
}

// Logoff ends the session politely: Asterisk answers Goodbye and closes.
// It is Shutdown without waiting for other requests. The session ends
// whatever happens; the error says whether Asterisk saw the Logoff: ctx's
// error when no Goodbye came in time, ErrClosed or ErrConnLost when the
// session had already ended or is being logged off by another call.
func (c *Client) Logoff(ctx context.Context) error {
	err := ErrClosed
	if c.loggedOff.CompareAndSwap(false, true) {
		err = c.logoff(ctx)
	}
	c.terminate(ErrClosed)
	return err
}

// ListCommands returns every action this user may run, one field per
// action: the key is the action, the value its synopsis and privileges.
func (c *Client) ListCommands(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("ListCommands"))
}

// CoreShowChannels lists the active channels: a Collection of
// CoreShowChannel events.
func (c *Client) CoreShowChannels(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("CoreShowChannels"))
}

// SIPPeers lists chan_sip peers: a Collection of PeerEntry events.
func (c *Client) SIPPeers(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("SIPpeers"))
}

// SIPShowPeer shows one chan_sip peer.
type SIPShowPeer struct {
	Peer string
}

// Action returns the SIPshowpeer action.
func (a SIPShowPeer) Action() *Message { return NewAction("SIPshowpeer", "Peer", a.Peer) }

// Agents lists agents: a Collection of Agents events.
func (c *Client) Agents(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("Agents"))
}

// AgentLogoff logs an agent off; Soft waits for its call to end.
type AgentLogoff struct {
	Agent string
	Soft  bool
}

// Action returns the AgentLogoff action.
func (a AgentLogoff) Action() *Message {
	return NewAction("AgentLogoff", "Agent", a.Agent, "Soft", strconv.FormatBool(a.Soft))
}

// Sendtext sends a text message to a channel.
type Sendtext struct {
	Channel string
	Message string
}

// Action returns the Sendtext action.
func (a Sendtext) Action() *Message {
	return NewAction("Sendtext", "Channel", a.Channel, "Message", a.Message)
}

// Hangup hangs up a channel with a Q.850 cause code; Cause 0 leaves it to
// Asterisk.
type Hangup struct {
	Channel string
	Cause   int
}

// Action returns the Hangup action.
func (a Hangup) Action() *Message {
	cause := ""
	if a.Cause > 0 {
		cause = strconv.Itoa(a.Cause)
	}
	return addSet(NewAction("Hangup", "Channel", a.Channel), "Cause", cause)
}

// GetConfig reads a configuration file, or one category of it when
// Category is not empty.
type GetConfig struct {
	Filename string
	Category string
}

// Action returns the GetConfig action.
func (a GetConfig) Action() *Message {
	return addSet(NewAction("GetConfig", "Filename", a.Filename), "Category", a.Category)
}

// Originate describes an Originate action. Either Context, Exten and
// Priority or Application and Data say where the call goes.
type Originate struct {
	Channel     string
	Context     string
	Exten       string
	Priority    string
	Application string
	Data        string
	Timeout     int // milliseconds; 0 leaves Asterisk's default
	CallerID    string
	Account     string
	Codecs      string
	Async       bool
	Variables   map[string]string
}

// Action returns the Originate as an Action message.
func (o Originate) Action() *Message {
	a := addSet(NewAction("Originate", "Channel", o.Channel),
		"Context", o.Context, "Exten", o.Exten, "Priority", o.Priority,
		"Application", o.Application, "Data", o.Data, "CallerID", o.CallerID,
		"Account", o.Account, "Codecs", o.Codecs)
	if o.Timeout > 0 {
		a.Add("Timeout", strconv.Itoa(o.Timeout))
	}
	a.Add("Async", strconv.FormatBool(o.Async))
	return a.AddMap("Variable", o.Variables)
}

// Redirect transfers a channel to a dialplan location.
type Redirect struct {
	Channel  string
	Context  string
	Exten    string
	Priority string
}

// Action returns the Redirect action.
func (a Redirect) Action() *Message {
	return NewAction("Redirect", "Channel", a.Channel, "Context", a.Context, "Exten", a.Exten, "Priority", a.Priority)
}

// Getvar reads a channel variable or function; an empty Channel reads a
// global variable.
type Getvar struct {
	Channel  string
	Variable string
}

// Action returns the Getvar action.
func (a Getvar) Action() *Message {
	return addSet(NewAction("Getvar", "Variable", a.Variable), "Channel", a.Channel)
}

// Setvar sets a channel variable; an empty Channel sets a global one.
type Setvar struct {
	Channel  string
	Variable string
	Value    string
}

// Action returns the Setvar action.
func (a Setvar) Action() *Message {
	return addSet(NewAction("Setvar", "Variable", a.Variable, "Value", a.Value), "Channel", a.Channel)
}

// Status lists channels with their state: a Collection of Status events.
// An empty Channel lists them all; Variables names channel variables to
// include, comma-separated.
type Status struct {
	Channel   string
	Variables string
}

// Action returns the Status action.
func (a Status) Action() *Message {
	return addSet(NewAction("Status"), "Channel", a.Channel, "Variables", a.Variables)
}

// CoreStatus returns the core's status: start time, current calls.
func (c *Client) CoreStatus(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("CoreStatus"))
}

// CoreSettings returns the core's settings, AsteriskVersion among them.
func (c *Client) CoreSettings(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("CoreSettings"))
}

// QueueStatus lists queues with their members and callers: a Collection.
// An empty Queue lists them all.
type QueueStatus struct {
	Queue string
}

// Action returns the QueueStatus action.
func (a QueueStatus) Action() *Message { return addSet(NewAction("QueueStatus"), "Queue", a.Queue) }

// QueueSummary summarises queues: a Collection of QueueSummary events. An
// empty Queue summarises them all.
type QueueSummary struct {
	Queue string
}

// Action returns the QueueSummary action.
func (a QueueSummary) Action() *Message { return addSet(NewAction("QueueSummary"), "Queue", a.Queue) }

// PJSIPShowEndpoints lists PJSIP endpoints: a Collection of EndpointList
// events.
func (c *Client) PJSIPShowEndpoints(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("PJSIPShowEndpoints"))
}

// DBGet reads a value from the Asterisk database. Asterisk answers with a
// one-entry Collection whose DBGetResponse event holds it:
// resp.Value("Val").
type DBGet struct {
	Family string
	Key    string
}

// Action returns the DBGet action.
func (a DBGet) Action() *Message { return NewAction("DBGet", "Family", a.Family, "Key", a.Key) }

// DBPut writes a value to the Asterisk database.
type DBPut struct {
	Family string
	Key    string
	Val    string
}

// Action returns the DBPut action.
func (a DBPut) Action() *Message {
	return NewAction("DBPut", "Family", a.Family, "Key", a.Key, "Val", a.Val)
}

// UserEvent sends a user event named Name with Headers, in order; repeated
// keys are kept.
type UserEvent struct {
	Name    string
	Headers []Field
}

// Action returns the UserEvent action.
func (a UserEvent) Action() *Message {
	m := NewAction("UserEvent", "UserEvent", a.Name)
	m.AddFields(a.Headers...)
	return m
}

// addSet adds the key, value pairs of kv whose value is not empty: the
// optional fields of an action, which Asterisk reads as set when present.
func addSet(m *Message, kv ...string) *Message {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			m.Add(kv[i], kv[i+1])
		}
	}
	return m
}
