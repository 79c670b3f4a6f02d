package amitest

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// pbxState is the little a fake PBX must remember: ids, variables, the
// AstDB and which fake channels were hung up.
type pbxState struct {
	epoch     int64 // Unix seconds of start: the first part of fake Uniqueids
	chanSeq   atomic.Uint32
	uidSeq    atomic.Uint64
	processed atomic.Int64
	live      liveCalls

	mu       sync.Mutex
	globals  map[string]string
	chanVars map[string]map[string]string // by channel name
	db       map[string]string            // "family/key" → value
	hungup   map[int]bool
}

func (p *pbxState) init(start time.Time) {
	p.epoch = start.Unix()
	p.globals = map[string]string{}
	p.chanVars = map[string]map[string]string{}
	p.db = map[string]string{}
	p.hungup = map[int]bool{}
}

// fakeChan is one of the Config.Channels live channels: Local/long@test
// pairs, ;1 then ;2, like the channels of capture 06c.
type fakeChan struct {
	index    int
	name     string
	pair     int
	side     int // 1 or 2
	uniqueid string
	linkedid string
	cidNum   string
	cidName  string
	app      string
	appData  string
}

const fakeChanPrefix = "Local/long@test-"

func (s *Server) fakeChannel(i int) fakeChan {
	pair, side := i/2, i%2+1
	epoch := strconv.FormatInt(s.pbx.epoch, 10)
	c := fakeChan{
		index:    i,
		name:     fmt.Sprintf("%s%08x;%d", fakeChanPrefix, pair, side),
		pair:     pair,
		side:     side,
		uniqueid: epoch + "." + strconv.Itoa(i),
		linkedid: epoch + "." + strconv.Itoa(pair*2),
		cidNum:   strconv.Itoa(1000 + pair),
		cidName:  "Long " + strconv.Itoa(pair),
		app:      "Wait",
		appData:  "25",
	}
	if side == 2 {
		c.appData = "30"
	}
	return c
}

// lookupChannel finds a live fake channel by name.
func (s *Server) lookupChannel(name string) (fakeChan, bool) {
	rest, ok := strings.CutPrefix(name, fakeChanPrefix)
	if !ok || len(rest) != 10 || rest[8] != ';' || (rest[9] != '1' && rest[9] != '2') {
		return fakeChan{}, false
	}
	pair, err := strconv.ParseUint(rest[:8], 16, 31)
	if err != nil {
		return fakeChan{}, false
	}
	i := int(pair)*2 + int(rest[9]-'1')
	if i >= s.cfg.Channels || s.isHungup(i) {
		return fakeChan{}, false
	}
	return s.fakeChannel(i), true
}

func (s *Server) isHungup(i int) bool {
	s.pbx.mu.Lock()
	defer s.pbx.mu.Unlock()
	return s.pbx.hungup[i]
}

// liveChannels calls f for each live fake channel, in order, until f
// returns false.
func (s *Server) liveChannels(f func(fakeChan) bool) {
	s.pbx.mu.Lock()
	hung := make(map[int]bool, len(s.pbx.hungup))
	for i := range s.pbx.hungup {
		hung[i] = true
	}
	s.pbx.mu.Unlock()
	for i := 0; i < s.cfg.Channels; i++ {
		if !hung[i] && !f(s.fakeChannel(i)) {
			return
		}
	}
}

func (s *Server) liveCount() int {
	s.pbx.mu.Lock()
	defer s.pbx.mu.Unlock()
	return s.cfg.Channels - len(s.pbx.hungup)
}

// chanVarValue returns the value of a channelvars variable on c: the first
// one is "long<pair>", like FOO in the captures, unless Setvar changed it.
func (s *Server) chanVarValue(c fakeChan, n int, name string) string {
	if v, ok := s.channelVar(c.name, name); ok {
		return v
	}
	if n == 0 {
		return "long" + strconv.Itoa(c.pair)
	}
	return ""
}

func (s *Server) channelVar(channel, name string) (string, bool) {
	s.pbx.mu.Lock()
	defer s.pbx.mu.Unlock()
	v, ok := s.pbx.chanVars[channel][name]
	return v, ok
}

// duration formats the time since start as Asterisk's HH:MM:SS.
func (s *Server) duration() (string, int) {
	secs := int(time.Since(s.started) / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", secs/3600, secs/60%60, secs%60), secs
}

// appendChanSnapshot appends the channel block every channel event and
// list item shares, as Asterisk 22 writes it. legacyStatus is the Asterisk
// 13 Status item: no Language, "Accountcode", and no ChanVariable lines.
func (s *Server) appendChanSnapshot(b []byte, c fakeChan, legacyStatus bool) []byte {
	b = appendField(b, "Channel", c.name)
	b = appendField(b, "ChannelState", "6")
	b = appendField(b, "ChannelStateDesc", "Up")
	b = appendField(b, "CallerIDNum", c.cidNum)
	b = appendField(b, "CallerIDName", c.cidName)
	b = appendField(b, "ConnectedLineNum", c.cidNum)
	b = appendField(b, "ConnectedLineName", c.cidName)
	if legacyStatus {
		b = appendField(b, "Accountcode", "")
	} else {
		b = appendField(b, "Language", "en")
		b = appendField(b, "AccountCode", "")
	}
	b = appendField(b, "Context", "test")
	b = appendField(b, "Exten", "long")
	b = appendInt(appendKey(b, "Priority"), c.side)
	b = append(b, '\r', '\n')
	b = appendField(b, "Uniqueid", c.uniqueid)
	b = appendField(b, "Linkedid", c.linkedid)
	if !legacyStatus {
		for n, v := range s.cfg.ChannelVars {
			b = appendField(b, "ChanVariable", v+"="+s.chanVarValue(c, n, v))
		}
	}
	return b
}

// appendCoreShowChannel appends one CoreShowChannel list item; its
// ActionID is the second line, as in the captures.
func (s *Server) appendCoreShowChannel(b []byte, c fakeChan, w *ResponseWriter, dur string) []byte {
	b = appendField(b, "Event", "CoreShowChannel")
	if w.hasID {
		b = appendField(b, "ActionID", w.actionID)
	}
	b = s.appendChanSnapshot(b, c, false)
	b = appendField(b, "Application", c.app)
	b = appendField(b, "ApplicationData", c.appData)
	b = appendField(b, "Duration", dur)
	b = appendField(b, "BridgeId", "")
	return append(b, '\r', '\n')
}

// appendStatus appends one Status list item; its ActionID is the last
// line, after the requested Variable lines.
func (s *Server) appendStatus(b []byte, c fakeChan, w *ResponseWriter, vars []string, secs int) []byte {
	legacy := s.profile == Asterisk13
	b = appendField(b, "Event", "Status")
	b = appendField(b, "Privilege", "Call")
	b = s.appendChanSnapshot(b, c, legacy)
	b = appendField(b, "Type", "Local")
	b = appendField(b, "DNID", "")
	b = appendField(b, "EffectiveConnectedLineNum", c.cidNum)
	b = appendField(b, "EffectiveConnectedLineName", c.cidName)
	b = appendField(b, "TimeToHangup", "0")
	b = appendField(b, "BridgeID", "")
	b = appendField(b, "Application", c.app)
	b = appendField(b, "Data", c.appData)
	b = appendField(b, "Nativeformats", "(slin)")
	b = appendField(b, "Readformat", "slin")
	b = appendField(b, "Readtrans", "")
	b = appendField(b, "Writeformat", "slin")
	b = appendField(b, "Writetrans", "")
	b = appendField(b, "Callgroup", "0")
	b = appendField(b, "Pickupgroup", "0")
	b = appendInt(appendKey(b, "Seconds"), secs)
	b = append(b, '\r', '\n')
	for _, v := range vars {
		b = appendField(b, "Variable", v+"="+s.statusVariable(c, v))
	}
	if w.hasID {
		b = appendField(b, "ActionID", w.actionID)
	}
	return append(b, '\r', '\n')
}

// statusVariable is a Status "Variables:" value: unset ones are "(null)".
func (s *Server) statusVariable(c fakeChan, name string) string {
	if name == "CHANNEL" {
		return c.name
	}
	for n, v := range s.cfg.ChannelVars {
		if v == name {
			if val := s.chanVarValue(c, n, v); val != "" {
				return val
			}
		}
	}
	if v, ok := s.channelVar(c.name, name); ok {
		return v
	}
	return "(null)"
}
