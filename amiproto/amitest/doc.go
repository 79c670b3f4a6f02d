// Package amitest is a fake Asterisk Manager Interface on 127.0.0.1 for
// tests, benchmarks and demos. It answers the way the live Asterisk builds
// recorded in ../testdata/captures did, byte for byte where it matters: the
// banner, the texts ("Authentication accepted", "Permission denied",
// "Missing action in request", ...), the field order, the ActionID
// position of each list item, and both Command framings.
//
//	srv, _ := amitest.Start(amitest.Config{Channels: 100})
//	defer srv.Close()
//	c, _ := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"))
//	resp, _ := c.Request(ctx, amiproto.NewAction("CoreShowChannels"))
//	srv.StartCalls(ctx, 50, 1000) // 50 calls/s, 22 events each
//
// # Profiles
//
// Asterisk22 (banner "Asterisk Call Manager/11.0.0") sends Command output
// as "Output:" lines; Asterisk13 ("Asterisk Call Manager/2.10.6") sends
// "Response: Follows", raw bare-LF lines and "--END COMMAND--", even for an
// unknown command. The event and list fields differ where the captures
// differ (FullyBooted, Status items, Newexten's class, CoreSettings,
// CoreStatus).
//
// # Sessions
//
// A session must log in (plain Secret, or MD5 after Challenge) before any
// action but Login, Challenge and Logoff. A failed login waits
// Config.AuthFailDelay, answers "Authentication failed" and closes;
// Config.RequireMD5 fails a plain-Secret login that way too. With
// Config.RecordReceived, Received returns every byte clients sent, for
// assertions on the wire. ServeConn serves a connection the test made
// itself, such as one end of a net.Pipe. A user
// without write access may only use the actions Asterisk lists with no
// privilege (Ping, Events, ListCommands, ...). Events reach the sessions
// whose mask (Login's Events, the Events action) takes their class.
//
// A session's actions are answered one at a time, in order, and, as on a
// real Asterisk (capture 17_sync_action_stalls_events), none of its events
// leave while one of its actions runs: they are held and follow the
// action's response at once. Other sessions are not held. So a handler
// that blocks, or a synchronous Originate of Local/noanswer@test that
// rings until its Timeout (30 s by default), stalls its own session's
// events exactly as a PBX would: the test bed for a client that must keep
// its events flowing while slow actions run.
//
// # Actions
//
// Login, Logoff, Challenge, Ping, Command, CoreShowChannels, Status,
// Originate, Events, Getvar, Setvar, CoreSettings, CoreStatus, UserEvent,
// ListCommands, Hangup, DBPut, DBGet, DBDel, DBDelTree, QueueRule,
// QueueStatus, QueueSummary, BridgeList, BridgeInfo, DeviceStateList,
// ShowDialPlan, GetConfig (of a
// manager.conf made from Config.Users, secrets included) and (Asterisk13
// only) Queues are built in; any other action answers "Invalid/unknown
// command". Handle adds or replaces actions. As Asterisk does, the bytes
// below 0x21 at the start of every value are skipped and action names
// match ignoring case.
//
// The queue and dialplan are those of the PBX that recorded capture 06c:
// queue "support" (ringall) with the static members "Agent One"
// (Local/agent@test, in a call at start, as in 06c) and "Busy Agent"
// (Local/busy@test); the contexts "parkedcalls" and "test" with their
// extensions. QueueStatus honours Queue and Member, QueueSummary Queue,
// ShowDialPlan Context and Extension, BridgeList BridgeType.
//
// # Live calls and scenarios
//
// PlayScenario plays one call over time, its phases as long as Timing
// says (milliseconds in tests, seconds in demos); StartMix plays a random,
// overlapping mix (Seed, Rate, Count, Kinds, MaxRing, MaxTalk), endless
// when Count is 0. The kinds
// are ScenarioDial (a Local pair answered through Dial, bridged),
// ScenarioQueue (a queue call answered by an agent), ScenarioQueueWait (the
// caller waits while the agent is paused), ScenarioBlindTransfer,
// ScenarioBusy, ScenarioNoAnswer and ScenarioOriginateBusy. Each replays,
// with fresh ids and real clocks, the events of a captured call of the
// profile's Asterisk, Cdr events included, in the captured order (even
// where Asterisk sent a Cdr before the channel events it sums up); the
// template in data/scenarios/<profile>/<kind>.txt names its capture, and
// TestScenarioTemplates checks that it is that capture with placeholders
// (go test -run TestScenarioTemplates -update-scenarios remakes them). The
// calls were recorded on both Asterisk 13.38.3 and 22.10.1 (captures 06b
// and 19a-19f; the tests compare the fake's lists with those 19a and 19b
// took mid-call).
//
// The events carry the captures' channelvars (FOO, BAR), whatever
// Config.ChannelVars says. A scenario stopped by its context leaves its
// channels up, as a PBX with a stuck call would list them.
//
// Every scenario event changes the server's live model (channels with
// their snapshot fields, application and bridge; bridges and members; the
// queue's members and waiting callers; the cached device states) under
// one lock, in the same step as the event is queued to the sessions.
// CoreShowChannels, Status, BridgeList, BridgeInfo, QueueStatus,
// QueueSummary and DeviceStateList answer from that model, under the same
// lock, after the session's events held so far: a list answer shows
// exactly the state the events in front of it built. Live returns the
// model (plus the Config.Channels channels) for tests that derive "what
// should be" from the PBX, and Cdrs the Cdr events sent for a Linkedid.
// As on Asterisk, a queue member is InCall from its AgentConnect to its
// AgentComplete though no QueueMemberStatus may say so (capture 19b), and
// DeviceStateList lists the cached states (the queue's
// Queue:… devices), never a Local channel's; Status on 13 has no Language
// or ChanVariable lines. The burst generator (StartCalls, PlayCall) stays
// out of the model: its calls begin and end within one batch, queued under
// the same lock, so no list answer lands inside one. A session that stops
// reading blocks, once its queue is full, the generators and the list
// answers of every session (Config.WriteTimeout drops it instead).
//
// # Calls and faults
//
// Originate, PlayCall and StartCalls play the event sequence of a real
// call (captures 07a and 14a) with fresh channel names and Uniqueids.
// "core show channels" (table, concise and count) lists both legs of each
// generated call for a second after it was played (its Cdr's duration;
// the latest 64 calls at most), after the Config.Channels channels.
// Faults can be switched at any time: DropMidMessage, DropDuring, Stall,
// SlowWrites, WriteGarbage, NeverAnswer, AnswerOutOfOrder and HalfOpen.
//
// # Replay
//
// Replay, ReplayCapture and StartReplay serve a recorded .recv.bin to each
// client, optionally at the recorded TCP read boundaries and following the
// recorded client writes.
package amitest
