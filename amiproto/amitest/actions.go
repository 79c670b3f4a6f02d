package amitest

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// builtins are the actions the fake answers, by lower-case name. Each
// answers with the fields, order and texts of the captures.
var builtins map[string]Handler

func init() {
	builtins = map[string]Handler{
		"login":            HandlerFunc(serveLogin),
		"logoff":           HandlerFunc(serveLogoff),
		"challenge":        HandlerFunc(serveChallenge),
		"ping":             HandlerFunc(servePing),
		"command":          HandlerFunc(serveCommand),
		"coreshowchannels": HandlerFunc(serveCoreShowChannels),
		"status":           HandlerFunc(serveStatus),
		"originate":        HandlerFunc(serveOriginate),
		"events":           HandlerFunc(serveEvents),
		"getvar":           HandlerFunc(serveGetvar),
		"setvar":           HandlerFunc(serveSetvar),
		"coresettings":     HandlerFunc(serveCoreSettings),
		"corestatus":       HandlerFunc(serveCoreStatus),
		"userevent":        HandlerFunc(serveUserEvent),
		"listcommands":     HandlerFunc(serveListCommands),
		"hangup":           HandlerFunc(serveHangup),
		"dbput":            HandlerFunc(serveDBPut),
		"dbget":            HandlerFunc(serveDBGet),
		"dbdel":            HandlerFunc(serveDBDel),
		"dbdeltree":        HandlerFunc(serveDBDelTree),
		"queuerule":        HandlerFunc(serveQueueRule),
		"queues":           HandlerFunc(serveQueues),
		"queuestatus":      HandlerFunc(serveQueueStatus),
		"queuesummary":     HandlerFunc(serveQueueSummary),
		"bridgelist":       HandlerFunc(serveBridgeList),
		"bridgeinfo":       HandlerFunc(serveBridgeInfo),
		"devicestatelist":  HandlerFunc(serveDeviceStateList),
		"showdialplan":     HandlerFunc(serveShowDialPlan),
		"getconfig":        HandlerFunc(serveGetConfig),
	}
}

// serveGetConfig answers GetConfig as action_getconfig of Asterisk 22's
// main/manager.c does, for the one file the fake has: manager.conf, made
// of a [general] category and one category per user (sorted by name) with
// its secret and classes. Its fields are "Category-NNNNNN: name" and
// "Line-NNNNNN-NNNNNN: key=value" after the Success and ActionID lines;
// a Category header picks one category ("No categories found" when none
// matches). Any other file is "Config file not found".
func serveGetConfig(w *ResponseWriter, r *Request) {
	fn := strings.TrimSpace(r.Get("Filename"))
	if fn == "" {
		w.Error("Filename not specified")
		return
	}
	if fn != "manager.conf" {
		w.Error("Config file not found")
		return
	}
	type category struct {
		name  string
		lines []string
	}
	cats := []category{{"general", []string{"enabled=yes", "port=5038", "bindaddr=127.0.0.1"}}}
	users := r.srv.cfg.Users
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		write := ""
		if users[name].Write {
			write = "all"
		}
		cats = append(cats, category{name, []string{"secret=" + users[name].Secret, "read=all", "write=" + write}})
	}
	want := r.Get("Category")
	w.buf = appendField(w.buf, "Response", "Success")
	w.appendActionID()
	n := 0
	for _, c := range cats {
		if want != "" && c.name != want {
			continue
		}
		num := fmt.Sprintf("%06d", n)
		w.buf = appendField(w.buf, "Category-"+num, c.name)
		for i, l := range c.lines {
			w.buf = appendField(w.buf, fmt.Sprintf("Line-%s-%06d", num, i), l)
		}
		n++
	}
	if want != "" && n == 0 {
		w.buf = append(w.buf, "No categories found\r\n"...)
	}
	w.end()
}

// legacyOnly are the built-in actions only the Asterisk 13 profile has.
var legacyOnly = map[string]bool{"queues": true}

// serveQueueRule answers as Asterisk does when no rule is defined: with
// an extra CRLF after the message, so an empty line precedes the next one.
func serveQueueRule(w *ResponseWriter, _ *Request) {
	w.Success()
	w.Write([]byte("\r\n"))
}

// queuesText is Asterisk 13's answer to Action: Queues, from capture 06c:
// raw CLI text with CRLF lines and colour escapes, no Response line, no
// ActionID, and three blank lines at the end.
const queuesText = "support has 0 calls (max unlimited) in 'ringall' strategy (0s holdtime, 4s talktime), W:0, C:1, A:0, SL:100.0% within 0s\r\n" +
	"   Members: \r\n" +
	"      Agent One (Local/agent@test) (ringinuse enabled)\x1b[0m\x1b[0m\x1b[0m\x1b[0m (\x1b[1;32;40mNot in use\x1b[0m) has taken 1 calls (last was 28 secs ago)\r\n" +
	"      Busy Agent (Local/busy@test) (ringinuse enabled)\x1b[0m\x1b[0m\x1b[0m\x1b[0m (\x1b[1;32;40mNot in use\x1b[0m) has taken no calls yet\r\n" +
	"   No Callers\r\n\r\n\r\n\r\n"

func serveQueues(w *ResponseWriter, _ *Request) { w.Write([]byte(queuesText)) }

func serveLogin(w *ResponseWriter, r *Request) {
	ss, srv := w.ss, w.ss.srv
	name := r.Get("Username")
	u, known := srv.cfg.Users[name]
	ok := false
	if known {
		if strings.EqualFold(r.Get("AuthType"), "MD5") {
			if ss.challenge != "" {
				sum := md5.Sum([]byte(ss.challenge + u.Secret))
				ok = strings.EqualFold(r.Get("Key"), hex.EncodeToString(sum[:]))
			}
		} else {
			ok = !srv.cfg.RequireMD5 && r.Get("Secret") == u.Secret
		}
	}
	if !ok {
		srv.logf("amitest: session %d: login refused for %q", ss.id, name)
		if d := srv.cfg.AuthFailDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ss.done:
				t.Stop()
			}
		}
		w.Error("Authentication failed")
		w.CloseAfter()
		return
	}
	mask := classAll
	if v, has := r.Lookup("Events"); has {
		mask = parseEventMask(v)
	}
	ss.user, ss.userWrite = name, u.Write
	ss.mask.Store(mask)
	w.Success("Message", "Authentication accepted")
	if mask&classSystem != 0 {
		w.buf = appendField(w.buf, "Event", "FullyBooted")
		w.buf = appendField(w.buf, "Privilege", "system,all")
		if srv.profile == Asterisk22 {
			up := strconv.Itoa(int(time.Since(srv.started) / time.Second))
			w.buf = appendField(w.buf, "Uptime", up)
			w.buf = appendField(w.buf, "LastReload", up)
		}
		w.buf = appendField(w.buf, "Status", "Fully Booted")
		w.end()
	}
	if ss.authTimer != nil {
		ss.authTimer.Stop()
	}
	ss.authed.Store(true)
	// The other sessions get the login's SuccessfulAuth before Sessions()
	// counts this one, so that an event emitted once a test sees the count
	// comes after it everywhere. The session's own copy follows its answer.
	auth := ss.securityEvent("SuccessfulAuth", "Informational", "UsingPassword", "0")
	srv.broadcastOne(auth, classSecurity)
	if ss.mask.Load()&classSecurity != 0 {
		w.buf = append(w.buf, auth...)
	}
	// The session joins the event stream in the same step as its answer
	// is queued: no event can get ahead of the answer, and Sessions()
	// counts it before the client can read it.
	ss.enqueueThen(w.buf, func() { srv.subscribe(ss) })
	w.buf = w.buf[:0]
}

func serveLogoff(w *ResponseWriter, _ *Request) {
	w.Respond("Goodbye", "Message", "Thanks for all the fish.")
	w.CloseAfter()
}

func serveChallenge(w *ResponseWriter, r *Request) {
	if !strings.EqualFold(r.Get("AuthType"), "MD5") {
		w.Error("Must specify AuthType")
		return
	}
	ss := w.ss
	if ss.challenge == "" {
		ss.challenge = strconv.Itoa(100000000 + rand.IntN(900000000))
	}
	w.Success("Challenge", ss.challenge)
}

// servePing answers in three socket writes, as Asterisk does: the
// Response line, the ActionID line, and the rest.
func servePing(w *ResponseWriter, _ *Request) {
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10) + "." + leftPad(strconv.Itoa(now.Nanosecond()/1000), 6)
	w.buf = appendField(w.buf, "Response", "Success")
	w.Segment()
	if w.hasID {
		w.appendActionID()
		w.Segment()
	}
	w.buf = appendField(w.buf, "Ping", "Pong")
	w.buf = appendField(w.buf, "Timestamp", ts)
	w.end()
}

func leftPad(s string, n int) string {
	for len(s) < n {
		s = "0" + s
	}
	return s
}

// serveOriginate plays the call of captures 07a/07d/14a. An async
// Originate answers "Originate successfully queued" at once and plays the
// call afterwards, with an OriginateResponse event that carries the
// ActionID; a sync one plays it without OriginateResponse, and a failing
// sync one answers "Originate failed". Config.AnswerDelay delays the
// sync answer, and the async OriginateResponse.
func serveOriginate(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	channel, ok := needField(w, r, "Channel", "Channel not specified")
	if !ok {
		return
	}
	spec := CallSpec{
		Channel:     channel,
		Application: r.Get("Application"),
		Data:        r.Get("Data"),
		Context:     r.Get("Context"),
		Exten:       r.Get("Exten"),
		CallerID:    r.Get("CallerID"),
		Sync:        !isTrue(r.Get("Async")),
	}
	spec.ActionID, _ = w.ActionID()
	if spec.Sync && ringsUnanswered(channel) {
		w.ss.ringTimeout(r)
		w.Error("Originate failed")
		return
	}
	if spec.Sync && !sleepCtx(srv.cfg.AnswerDelay, w.ss.done) {
		return
	}
	if spec.Sync && resolveCall(spec).failReason != 0 {
		w.Error("Originate failed")
	} else {
		w.Success("Message", "Originate successfully queued")
	}
	w.commit()
	if spec.Sync {
		srv.PlayCall(spec)
		return
	}
	// The session holds a count on wg, so this Add cannot race Wait.
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		if sleepCtx(srv.cfg.AnswerDelay, srv.ctx.Done()) {
			srv.PlayCall(spec)
		}
	}()
}

// sleepCtx waits d, or until done is closed; it reports whether d passed.
func sleepCtx(d time.Duration, done <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

func isTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true", "y", "t", "1", "on":
		return true
	}
	return false
}

func serveEvents(w *ResponseWriter, r *Request) {
	v, ok := r.Lookup("EventMask")
	if !ok {
		w.Error("Invalid event mask")
		return
	}
	mask := parseEventMask(v)
	w.ss.mask.Store(mask)
	if mask != 0 {
		w.Success("Events", "On")
	} else {
		w.Success("Events", "Off")
	}
}

func serveGetvar(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	name, ok := needField(w, r, "Variable", "No variable specified")
	if !ok {
		return
	}
	var value string
	if ch := r.Get("Channel"); ch != "" {
		c, ok := srv.lookupChannel(ch)
		if !ok {
			w.Error("No such channel")
			return
		}
		value = srv.channelValue(c, name)
	} else {
		value = srv.globalValue(name)
	}
	w.Success("Variable", name, "Value", value)
}

// channelValue reads a variable or a CHANNEL() function on a fake channel.
func (s *Server) channelValue(c fakeChan, name string) string {
	if v, ok := s.channelVar(c.name, name); ok {
		return v
	}
	switch name {
	case "CHANNEL(state)":
		return "Up"
	case "CHANNEL", "CHANNEL(name)":
		return c.name
	case "CHANNEL(uniqueid)":
		return c.uniqueid
	case "CHANNEL(linkedid)":
		return c.linkedid
	}
	for n, v := range s.cfg.ChannelVars {
		if v == name {
			return s.chanVarValue(c, n, v)
		}
	}
	return ""
}

func (s *Server) globalValue(name string) string {
	if inner, ok := strings.CutPrefix(name, "GLOBAL("); ok {
		name = strings.TrimSuffix(inner, ")")
	}
	s.pbx.mu.Lock()
	defer s.pbx.mu.Unlock()
	return s.pbx.globals[name]
}

func serveSetvar(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	name, ok := needField(w, r, "Variable", "No variable specified")
	if !ok {
		return
	}
	value := r.Get("Value")
	ch := r.Get("Channel")
	var c fakeChan
	if ch != "" {
		var ok bool
		if c, ok = srv.lookupChannel(ch); !ok {
			w.Error("No such channel")
			return
		}
	}
	srv.pbx.mu.Lock()
	if ch == "" {
		srv.pbx.globals[strings.TrimSuffix(strings.TrimPrefix(name, "GLOBAL("), ")")] = value
	} else {
		if srv.pbx.chanVars[c.name] == nil {
			srv.pbx.chanVars[c.name] = map[string]string{}
		}
		srv.pbx.chanVars[c.name][name] = value
	}
	srv.pbx.mu.Unlock()
	w.Success("Message", "Variable Set")
	w.commit()

	ev := appendField(nil, "Event", "VarSet")
	ev = appendField(ev, "Privilege", "dialplan,all")
	if ch == "" {
		ev = appendField(ev, "Channel", "none")
		ev = appendField(ev, "Uniqueid", "none")
	} else {
		ev = appendLiveSnapshot(ev, srv.asLive(c), false)
	}
	ev = appendField(ev, "Variable", name)
	ev = appendField(ev, "Value", value)
	srv.broadcastOne(append(ev, '\r', '\n'), classDialplan)
}

func serveCoreSettings(w *ResponseWriter, _ *Request) {
	p := w.ss.srv.profile
	kv := []string{
		"AMIversion", p.AMIVersion(),
		"AsteriskVersion", p.AsteriskVersion(),
		"SystemName", "",
		"CoreMaxCalls", "0",
		"CoreMaxLoadAvg", "0.000000",
		"CoreRunUser", "",
		"CoreRunGroup", "",
		"CoreMaxFilehandles", "0",
		"CoreRealTimeEnabled", "No",
		"CoreCDRenabled", "Yes",
		"CoreHTTPenabled", "No",
	}
	if p == Asterisk22 {
		kv = append(kv, "SoundsSearchCustomDir", "No")
	}
	w.Success(kv...)
}

func serveCoreStatus(w *ResponseWriter, _ *Request) {
	srv := w.ss.srv
	start := srv.started
	kv := []string{
		"CoreStartupDate", start.Format("2006-01-02"),
		"CoreStartupTime", start.Format("15:04:05"),
		"CoreReloadDate", start.Format("2006-01-02"),
		"CoreReloadTime", start.Format("15:04:05"),
		"CoreCurrentCalls", strconv.Itoa((srv.liveCount() + 1) / 2),
	}
	if srv.profile == Asterisk22 {
		kv = append(kv, "CoreProcessedCalls", strconv.FormatInt(srv.pbx.processed.Load(), 10))
	}
	w.Success(kv...)
}

// serveUserEvent answers "Event Sent" and emits the event with every
// header of the action but Action and UserEvent, in order, duplicates and
// ActionID included, as capture 07b shows.
func serveUserEvent(w *ResponseWriter, r *Request) {
	w.Success("Message", "Event Sent")
	w.commit()
	ev := appendField(nil, "Event", "UserEvent")
	ev = appendField(ev, "Privilege", "user,all")
	ev = appendField(ev, "UserEvent", r.Get("UserEvent"))
	for _, f := range r.Fields() {
		if strings.EqualFold(f.Key, "Action") || strings.EqualFold(f.Key, "UserEvent") {
			continue
		}
		ev = appendField(ev, f.Key, f.Value)
	}
	w.ss.srv.broadcastOne(append(ev, '\r', '\n'), classUser)
}

// serveListCommands lists the actions the user may run, as Asterisk's
// action_listcommands does: those of its write classes, and those that
// need none.
func serveListCommands(w *ResponseWriter, _ *Request) {
	w.buf = appendField(w.buf, "Response", "Success")
	w.appendActionID()
	for line := range strings.Lines(w.ss.srv.cli.listCommands) {
		if !w.ss.userWrite && !strings.Contains(line, "(Priv: <none>)") {
			continue
		}
		w.buf = append(w.buf, strings.TrimSuffix(line, "\n")...)
		w.buf = append(w.buf, '\r', '\n')
	}
	w.end()
}

func serveHangup(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	name, ok := needField(w, r, "Channel", "No channel specified")
	if !ok {
		return
	}
	c, ok := srv.lookupChannel(name)
	if !ok {
		w.Error("No such channel")
		return
	}
	srv.pbx.mu.Lock()
	srv.pbx.hungup[c.index] = true
	srv.pbx.mu.Unlock()
	w.Success("Message", "Channel Hungup")
	w.commit()
	cause := r.Get("Cause")
	if cause == "" {
		cause = "16"
	}
	ev := appendField(nil, "Event", "Hangup")
	ev = appendField(ev, "Privilege", "call,all")
	ev = appendLiveSnapshot(ev, srv.asLive(c), false)
	ev = appendField(ev, "Cause", cause)
	ev = appendField(ev, "Cause-txt", "Normal Clearing")
	srv.broadcastOne(append(ev, '\r', '\n'), classCall)
}

// needField returns the value of key, or answers missing and reports
// false when the request lacks it (or has it empty), as Asterisk does.
func needField(w *ResponseWriter, r *Request, key, missing string) (string, bool) {
	v := r.Get(key)
	if v == "" {
		w.Error(missing)
		return "", false
	}
	return v, true
}

func dbKey(w *ResponseWriter, r *Request, needKey bool) (string, bool) {
	family, ok := needField(w, r, "Family", "No family specified")
	if !ok {
		return "", false
	}
	key := r.Get("Key")
	if needKey && key == "" {
		w.Error("No key specified")
		return "", false
	}
	return family + "/" + key, true
}

// inDB runs f on the fake AstDB, under its lock, with the request's
// "family/key". It answers the failures itself (no family, no key when
// needKey, and "Database entry not found" when f finds nothing) and
// reports whether the caller is to answer success.
func inDB(w *ResponseWriter, r *Request, needKey bool, f func(db map[string]string, k string) (found bool)) bool {
	k, ok := dbKey(w, r, needKey)
	if !ok {
		return false
	}
	p := &w.ss.srv.pbx
	p.mu.Lock()
	found := f(p.db, k)
	p.mu.Unlock()
	if !found {
		w.Error("Database entry not found")
	}
	return found
}

func serveDBPut(w *ResponseWriter, r *Request) {
	if inDB(w, r, true, func(db map[string]string, k string) bool {
		db[k] = r.Get("Val")
		return true
	}) {
		w.Success("Message", "Updated database successfully")
	}
}

func serveDBGet(w *ResponseWriter, r *Request) {
	var v string
	if !inDB(w, r, true, func(db map[string]string, k string) (found bool) {
		v, found = db[k]
		return found
	}) {
		return
	}
	w.Success("EventList", "start", "Message", "Result will follow")
	w.buf = appendField(w.buf, "Event", "DBGetResponse")
	w.buf = appendField(w.buf, "Family", r.Get("Family"))
	w.buf = appendField(w.buf, "Key", r.Get("Key"))
	w.buf = appendField(w.buf, "Val", v)
	w.appendActionID()
	w.end()
	w.listComplete("DBGetComplete", 1)
}

func serveDBDel(w *ResponseWriter, r *Request) {
	if inDB(w, r, true, func(db map[string]string, k string) (found bool) {
		_, found = db[k]
		delete(db, k)
		return found
	}) {
		w.Success("Message", "Key deleted successfully")
	}
}

func serveDBDelTree(w *ResponseWriter, r *Request) {
	if inDB(w, r, false, func(db map[string]string, k string) bool {
		prefix := strings.TrimSuffix(k, "/")
		n := 0
		for key := range db {
			if key == prefix || strings.HasPrefix(key, prefix+"/") {
				delete(db, key)
				n++
			}
		}
		return n > 0
	}) {
		w.Success("Message", "Key tree deleted successfully")
	}
}
