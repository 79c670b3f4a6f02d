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

// upSeconds is the whole seconds since the PBX started.
func (s *Server) upSeconds() int { return int(time.Since(s.started) / time.Second) }

// asLive is c as a channel of the live model, so that one renderer
// writes both kinds: up since the PBX started, its channelvars as they
// are now.
func (s *Server) asLive(c fakeChan) *liveChan {
	l := &liveChan{name: c.name, uniqueid: c.uniqueid, linkedid: c.linkedid, state: 6,
		cidNum: c.cidNum, cidName: c.cidName, conNum: c.cidNum, conName: c.cidName, language: "en",
		context: "test", exten: "long", priority: c.side, app: c.app, appData: c.appData, created: s.started}
	for n, v := range s.cfg.ChannelVars {
		l.chanVars = append(l.chanVars, v+"="+s.chanVarValue(c, n, v))
	}
	return l
}
