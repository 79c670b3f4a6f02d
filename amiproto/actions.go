package amiproto

import (
	"context"
	"strconv"
)

// The helpers below build the actions clue/reactphp-ami offers and the ones
// used most today. Each is one Request; any other action works through
// Request with no change to the library.

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
// It is Shutdown without waiting for other requests.
func (c *Client) Logoff(ctx context.Context) error {
	c.logoff(ctx)
	c.terminate(ErrClosed)
	return nil
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
func (c *Client) SIPShowPeer(ctx context.Context, peer string) (*Response, error) {
	return c.Request(ctx, NewAction("SIPshowpeer", "Peer", peer))
}

// Agents lists agents: a Collection of Agents events.
func (c *Client) Agents(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("Agents"))
}

// AgentLogoff logs an agent off; soft waits for its call to end.
func (c *Client) AgentLogoff(ctx context.Context, agent string, soft bool) (*Response, error) {
	return c.Request(ctx, NewAction("AgentLogoff", "Agent", agent, "Soft", strconv.FormatBool(soft)))
}

// Sendtext sends a text message to a channel.
func (c *Client) Sendtext(ctx context.Context, channel, message string) (*Response, error) {
	return c.Request(ctx, NewAction("Sendtext", "Channel", channel, "Message", message))
}

// Hangup hangs up a channel with a Q.850 cause code; cause 0 leaves it to
// Asterisk.
func (c *Client) Hangup(ctx context.Context, channel string, cause int) (*Response, error) {
	a := NewAction("Hangup", "Channel", channel)
	if cause > 0 {
		a.Add("Cause", strconv.Itoa(cause))
	}
	return c.Request(ctx, a)
}

// GetConfig reads a configuration file, or one category of it when
// category is not empty.
func (c *Client) GetConfig(ctx context.Context, filename, category string) (*Response, error) {
	a := NewAction("GetConfig", "Filename", filename)
	if category != "" {
		a.Add("Category", category)
	}
	return c.Request(ctx, a)
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
	a := NewAction("Originate", "Channel", o.Channel)
	for _, kv := range [...][2]string{
		{"Context", o.Context}, {"Exten", o.Exten}, {"Priority", o.Priority},
		{"Application", o.Application}, {"Data", o.Data}, {"CallerID", o.CallerID},
		{"Account", o.Account}, {"Codecs", o.Codecs},
	} {
		if kv[1] != "" {
			a.Add(kv[0], kv[1])
		}
	}
	if o.Timeout > 0 {
		a.Add("Timeout", strconv.Itoa(o.Timeout))
	}
	a.Add("Async", strconv.FormatBool(o.Async))
	return a.AddMap("Variable", o.Variables)
}

// Originate places a call. With Async the answer only says the call was
// queued; its outcome comes later as an OriginateResponse event carrying
// the same ActionID.
func (c *Client) Originate(ctx context.Context, o Originate) (*Response, error) {
	return c.Request(ctx, o.Action())
}

// Redirect transfers a channel to a dialplan location.
func (c *Client) Redirect(ctx context.Context, channel, context_, exten, priority string) (*Response, error) {
	return c.Request(ctx, NewAction("Redirect", "Channel", channel, "Context", context_, "Exten", exten, "Priority", priority))
}

// Getvar reads a channel variable or function; an empty channel reads a
// global variable.
func (c *Client) Getvar(ctx context.Context, channel, variable string) (string, error) {
	a := NewAction("Getvar", "Variable", variable)
	if channel != "" {
		a.Add("Channel", channel)
	}
	resp, err := c.Request(ctx, a)
	if err != nil {
		return "", err
	}
	return resp.Get("Value"), nil
}

// Setvar sets a channel variable; an empty channel sets a global one.
func (c *Client) Setvar(ctx context.Context, channel, variable, value string) error {
	a := NewAction("Setvar", "Variable", variable, "Value", value)
	if channel != "" {
		a.Add("Channel", channel)
	}
	_, err := c.Request(ctx, a)
	return err
}

// Status lists channels with their state: a Collection of Status events.
// An empty channel lists them all; variables name channel variables to
// include.
func (c *Client) Status(ctx context.Context, channel, variables string) (*Response, error) {
	a := NewAction("Status")
	if channel != "" {
		a.Add("Channel", channel)
	}
	if variables != "" {
		a.Add("Variables", variables)
	}
	return c.Request(ctx, a)
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
// An empty queue lists them all.
func (c *Client) QueueStatus(ctx context.Context, queue string) (*Response, error) {
	a := NewAction("QueueStatus")
	if queue != "" {
		a.Add("Queue", queue)
	}
	return c.Request(ctx, a)
}

// QueueSummary summarises queues: a Collection of QueueSummary events.
func (c *Client) QueueSummary(ctx context.Context, queue string) (*Response, error) {
	a := NewAction("QueueSummary")
	if queue != "" {
		a.Add("Queue", queue)
	}
	return c.Request(ctx, a)
}

// PJSIPShowEndpoints lists PJSIP endpoints: a Collection of EndpointList
// events.
func (c *Client) PJSIPShowEndpoints(ctx context.Context) (*Response, error) {
	return c.Request(ctx, NewAction("PJSIPShowEndpoints"))
}

// DBGet reads a value from the Asterisk database. Asterisk answers with a
// one-entry Collection whose DBGetResponse event holds Val.
func (c *Client) DBGet(ctx context.Context, family, key string) (string, error) {
	resp, err := c.Request(ctx, NewAction("DBGet", "Family", family, "Key", key))
	if err != nil {
		return "", err
	}
	for _, ev := range resp.Events {
		if v, ok := ev.Lookup("Val"); ok {
			return v, nil
		}
	}
	return resp.Get("Val"), nil
}

// DBPut writes a value to the Asterisk database.
func (c *Client) DBPut(ctx context.Context, family, key, value string) error {
	_, err := c.Request(ctx, NewAction("DBPut", "Family", family, "Key", key, "Val", value))
	return err
}

// UserEvent sends a user event with the given headers, in order; repeated
// keys are kept.
func (c *Client) UserEvent(ctx context.Context, name string, headers ...Field) error {
	a := NewAction("UserEvent", "UserEvent", name)
	a.AddFields(headers...)
	_, err := c.Request(ctx, a)
	return err
}
