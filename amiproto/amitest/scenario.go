package amitest

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// ScenarioKind names a call the fake PBX can play over time.
type ScenarioKind string

// The scenarios. Each plays the events of a real call of its kind, in the
// order and with the fields the profile's Asterisk sent them, from a
// template in data/scenarios/<profile>/<kind>.txt made from a capture
// (the template's first lines say which). Channel numbers, Uniqueids,
// bridge ids, times and counters are fresh for each call; Timing sets
// how long its phases last.
const (
	// ScenarioDial originates Local/dial@test (Application Wait 20,
	// CallerID Alice <100>); its ;2 half Dials Local/echo@test, which
	// answers after Timing.Ring; the two are bridged for Timing.Talk, then
	// echo hangs up. Three Cdrs, all ANSWERED. Capture 19a.
	ScenarioDial ScenarioKind = "dial"
	// ScenarioQueue originates Local/queue@test (caller ID "Queue Caller"
	// <2000>, Application Wait 20); its ;2 half runs Queue(support),
	// which rings both members: "Busy Agent" is busy, "Agent One" answers
	// after Timing.Ring and is bridged with the caller for Timing.Talk.
	// Four Cdrs (22: BUSY for the busy member, 13: NO ANSWER). Capture 06b.
	ScenarioQueue ScenarioKind = "queue"
	// ScenarioQueueWait pauses Agent One, then originates Local/queue@test
	// (CallerID Alice <100>, Application Wait 20) into Queue(support):
	// Busy Agent is rung and busy while the caller waits Timing.Ring;
	// then Agent One is unpaused, both are rung, the agent answers and
	// talks Timing.Talk. Five Cdrs. Capture 19b.
	ScenarioQueueWait ScenarioKind = "queuewait"
	// ScenarioBlindTransfer is ScenarioDial whose callee's half, after
	// Timing.Talk, blind-transfers the caller to echo@test, which talks
	// for Timing.Talk again. Four Cdrs. Capture 19c.
	ScenarioBlindTransfer ScenarioKind = "blindtransfer"
	// ScenarioBusy originates Local/long@test running
	// Dial(Local/busy@test,5); busy answers Busy(): three Cdrs, one BUSY
	// (on 22 sent, as captured, before the channels' events). Capture 19d.
	ScenarioBusy ScenarioKind = "busy"
	// ScenarioNoAnswer originates Local/long@test running
	// Dial(Local/noanswer@test,3); noanswer rings for Timing.Ring until the
	// Dial gives up: Cdrs ANSWERED, NO ANSWER, ANSWERED. Capture 19e.
	ScenarioNoAnswer ScenarioKind = "noanswer"
	// ScenarioOriginateBusy originates Local/busy@test: the originated
	// channel is busy, the Originate fails with Reason 5 and no Cdr is
	// sent. Capture 19f.
	ScenarioOriginateBusy ScenarioKind = "originate-busy"
)

// Kinds lists the scenarios the server can play, for mixes.
func (s *Server) Kinds() []ScenarioKind {
	out := make([]ScenarioKind, 0, len(s.scen))
	for _, k := range scenarioKinds {
		if s.scen[k] != nil {
			out = append(out, k)
		}
	}
	return out
}

var scenarioKinds = []ScenarioKind{ScenarioDial, ScenarioQueue, ScenarioQueueWait, ScenarioBlindTransfer,
	ScenarioBusy, ScenarioNoAnswer, ScenarioOriginateBusy}

// Timing sets how long the phases of a scenario last. Zero plays them
// back to back.
type Timing struct {
	// Ring is how long the called party rings before it answers.
	Ring time.Duration
	// Talk is how long the answered call lasts.
	Talk time.Duration
}

// ScenarioInfo is what a played scenario sent.
type ScenarioInfo struct {
	Kind     ScenarioKind
	Linkedid string   // the Linkedid of all its channels
	Channels []string // the names of its channels, in creation order
	Events   int      // the events it sent
	// Cdrs are its Cdr events, in the order they were sent.
	Cdrs []*amiproto.Message
}

//go:embed data/scenarios
var scenarioFiles embed.FS

// tmplItem is one step of a scenario template.
type tmplItem struct {
	op     byte // 'e' an event, 'm' a time mark, 'w' a wait
	name   string
	fields []field
	class  uint32
}

type scenarioTmpl struct {
	items                []tmplItem
	chans, uids, bridges int
}

var placeholderRe = regexp.MustCompile(`\{([NUB])([0-9]+)\}`)

// parseScenario reads a template: events as blank-line separated
// "Key: value" blocks, with placeholders in keys and values, and
// "@mark name" / "@wait ring|talk" lines between them.
func parseScenario(text string) (*scenarioTmpl, error) {
	t := &scenarioTmpl{}
	for _, block := range strings.Split(strings.TrimSpace(text), "\n\n") {
		lines := strings.Split(block, "\n")
		if strings.HasPrefix(lines[0], "#") {
			continue // a comment: where the template comes from
		}
		if strings.HasPrefix(lines[0], "@") {
			for _, l := range lines {
				op, name, _ := strings.Cut(l, " ")
				switch op {
				case "@mark":
					t.items = append(t.items, tmplItem{op: 'm', name: name})
				case "@wait":
					if name != "ring" && name != "talk" {
						return nil, fmt.Errorf("unknown wait %q", name)
					}
					t.items = append(t.items, tmplItem{op: 'w', name: name})
				default:
					return nil, fmt.Errorf("unknown directive %q", l)
				}
			}
			continue
		}
		it := tmplItem{op: 'e'}
		for _, l := range lines {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				return nil, fmt.Errorf("line without a colon: %q", l)
			}
			v = strings.TrimPrefix(v, " ")
			it.fields = append(it.fields, field{k, v})
			if k == "Privilege" {
				it.class = eventClasses(v)
			}
			for _, m := range placeholderRe.FindAllStringSubmatch(l, -1) {
				n, _ := strconv.Atoi(m[2])
				switch m[1] {
				case "N":
					t.chans = max(t.chans, n+1)
				case "U":
					t.uids = max(t.uids, n+1)
				case "B":
					t.bridges = max(t.bridges, n+1)
				}
			}
		}
		if it.fields[0].key != "Event" {
			return nil, fmt.Errorf("block does not start with Event: %q", lines[0])
		}
		t.items = append(t.items, it)
	}
	return t, nil
}

var (
	scenarioMu    sync.Mutex
	scenarioCache = map[Profile]map[ScenarioKind]*scenarioTmpl{}
)

// scenarios returns the profile's parsed templates, parsed once per
// process: they are read-only.
func scenarios(p Profile) map[ScenarioKind]*scenarioTmpl {
	scenarioMu.Lock()
	defer scenarioMu.Unlock()
	if m, ok := scenarioCache[p]; ok {
		return m
	}
	m := loadScenarios(p)
	scenarioCache[p] = m
	return m
}

func loadScenarios(p Profile) map[ScenarioKind]*scenarioTmpl {
	out := map[ScenarioKind]*scenarioTmpl{}
	for _, k := range scenarioKinds {
		b, err := scenarioFiles.ReadFile("data/scenarios/" + p.String() + "/" + string(k) + ".txt")
		if err != nil {
			continue
		}
		t, err := parseScenario(string(b))
		if err != nil {
			panic(fmt.Sprintf("amitest: scenario %s/%s: %v", p, k, err))
		}
		out[k] = t
	}
	return out
}

// scenarioRun is one playing of a template.
type scenarioRun struct {
	srv     *Server
	chans   []string // 8 hex digits each
	uids    []string
	bridges []string
	marks   map[string]time.Time
	info    ScenarioInfo
}

// ErrUnknownScenario is returned for a kind the profile has no template
// for.
var ErrUnknownScenario = errors.New("amitest: unknown scenario")

// PlayScenario plays one call of kind, with the phases of t, and returns
// when its last event is queued to the sessions (or ctx ends, or the
// server closes, leaving the call where it was). Each event changes the
// server's live model (Live) in the same step as it is queued, so list
// actions agree with the events before them.
func (s *Server) PlayScenario(ctx context.Context, kind ScenarioKind, t Timing) (ScenarioInfo, error) {
	tm := s.scen[kind]
	if tm == nil {
		return ScenarioInfo{}, fmt.Errorf("%w: %q on %s", ErrUnknownScenario, kind, s.profile)
	}
	now := time.Now()
	r := &scenarioRun{srv: s, marks: map[string]time.Time{}, info: ScenarioInfo{Kind: kind}}
	first := s.pbx.chanSeq.Add(uint32(tm.chans)) - uint32(tm.chans)
	for i := range tm.chans {
		r.chans = append(r.chans, string(appendHex8(nil, first+uint32(i))))
	}
	u := s.pbx.uidSeq.Add(uint64(tm.uids)) - uint64(tm.uids)
	epoch := strconv.FormatInt(now.Unix(), 10) + "."
	for i := range tm.uids {
		r.uids = append(r.uids, epoch+strconv.FormatUint(u+uint64(i), 10))
	}
	for range tm.bridges {
		r.bridges = append(r.bridges, newUUID())
	}
	if len(r.uids) > 0 {
		r.info.Linkedid = r.uids[0]
	}
	for _, it := range tm.items {
		switch it.op {
		case 'm':
			r.marks[it.name] = time.Now()
		case 'w':
			d := t.Ring
			if it.name == "talk" {
				d = t.Talk
			}
			if err := s.sleep(ctx, d); err != nil {
				return r.info, err
			}
		case 'e':
			r.emit(&it)
		}
	}
	s.pbx.processed.Add(1)
	return r.info, nil
}

// sleep waits d, or until ctx ends or the server closes.
func (s *Server) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrServerClosed
	}
}

// emit renders one event, applies it to the live model and queues it to
// the sessions, all under the model's lock.
func (r *scenarioRun) emit(it *tmplItem) {
	s := r.srv
	m := &s.live
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	fs := make([]field, 0, len(it.fields))
	var b []byte
	for _, f := range it.fields {
		f = field{r.expand(f.key, fs, now), r.expand(f.value, fs, now)}
		fs = append(fs, f)
		b = appendField(b, f.key, f.value)
	}
	b = append(b, '\r', '\n')
	m.apply(fs, r.info.Linkedid, now)
	switch fs[0].value {
	case "Newchannel":
		name, _ := get(fs, "Channel")
		r.info.Channels = append(r.info.Channels, name)
	case "Cdr":
		cdrs := m.cdrs[r.info.Linkedid]
		r.info.Cdrs = append(r.info.Cdrs, cdrs[len(cdrs)-1])
	}
	r.info.Events++
	s.broadcastOne(b, it.class)
}

const cdrTimeLayout = "2006-01-02 15:04:05"

// expand replaces the placeholders of v: {Nk} channel numbers, {Uk}
// Uniqueids, {Bk} bridge ids, {LOGIN} the queue members' login time,
// {NOW} the Unix time, {T m} the time of mark m as a Cdr writes it,
// {D a b} whole seconds from mark a to b (ms/1000, as cdr.c), {DS a b}
// the difference of their Unix seconds (as app_queue's time(NULL)
// arithmetic), {MS a b} milliseconds, and {CT}, {CT1}, {LC} the calls
// taken (when its current call connected, plus one) and last call of the
// member named by the event's MemberName. The mark "now" is the event's own time.
func (r *scenarioRun) expand(v string, fs []field, now time.Time) string {
	if !strings.Contains(v, "{") {
		return v
	}
	var out strings.Builder
	for {
		i := strings.IndexByte(v, '{')
		if i < 0 {
			out.WriteString(v)
			return out.String()
		}
		j := strings.IndexByte(v[i:], '}')
		if j < 0 {
			out.WriteString(v)
			return out.String()
		}
		out.WriteString(v[:i])
		out.WriteString(r.placeholder(v[i+1:i+j], fs, now))
		v = v[i+j+1:]
	}
}

func (r *scenarioRun) mark(name string, now time.Time) time.Time {
	if name == "now" {
		return now
	}
	if t, ok := r.marks[name]; ok {
		return t
	}
	panic("amitest: scenario uses unknown mark " + name)
}

func (r *scenarioRun) placeholder(p string, fs []field, now time.Time) string {
	args := strings.Fields(p)
	if len(args) == 0 {
		return "{" + p + "}"
	}
	m := &r.srv.live
	member := func() *liveMember {
		name, _ := get(fs, "MemberName")
		if mb := m.member(name); mb != nil {
			return mb
		}
		return &liveMember{}
	}
	switch args[0] {
	case "LOGIN":
		return strconv.FormatInt(m.queue.loginTime, 10)
	case "NOW":
		return strconv.FormatInt(now.Unix(), 10)
	case "T":
		return r.mark(args[1], now).Format(cdrTimeLayout)
	case "D":
		return strconv.FormatInt(r.mark(args[2], now).Sub(r.mark(args[1], now)).Milliseconds()/1000, 10)
	case "DS":
		return strconv.FormatInt(r.mark(args[2], now).Unix()-r.mark(args[1], now).Unix(), 10)
	case "MS":
		return strconv.FormatInt(r.mark(args[2], now).Sub(r.mark(args[1], now)).Milliseconds(), 10)
	case "CT":
		return strconv.Itoa(member().callsTaken)
	case "CT1":
		return strconv.Itoa(member().connectCalls + 1)
	case "LC":
		return strconv.FormatInt(member().lastCall, 10)
	}
	n, err := strconv.Atoi(p[1:])
	if err == nil {
		switch p[0] {
		case 'N':
			return r.chans[n]
		case 'U':
			return r.uids[n]
		case 'B':
			return r.bridges[n]
		}
	}
	return "{" + p + "}"
}

// newUUID returns a random version 4 UUID, as Asterisk names bridges.
func newUUID() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[x>>4], hex[x&15])
	}
	return string(out)
}

// MixSpec describes a random mix of scenarios.
type MixSpec struct {
	// Seed makes the mix repeatable: the same kinds and timings in the
	// same order.
	Seed uint64
	// Rate is how many scenarios start per second; <= 0 means 100.
	Rate float64
	// Count is how many scenarios to play; <= 0 plays until the context
	// ends or the server closes (a demo's endless traffic).
	Count int
	// Kinds are the scenarios to pick from; nil means all of them.
	Kinds []ScenarioKind
	// MaxRing and MaxTalk bound each scenario's random Timing.
	MaxRing, MaxTalk time.Duration
}

// Mix is a running mix of scenarios, started by StartMix.
type Mix struct {
	done  chan struct{}
	mu    sync.Mutex
	infos []ScenarioInfo
	err   error
}

// Done is closed when every scenario of the mix has ended.
func (m *Mix) Done() <-chan struct{} { return m.done }

// Wait waits for the mix to end and returns what each scenario sent, in
// the order they ended (the latest maxMixInfos of an endless mix), and
// the first error (ctx's, or ErrServerClosed).
func (m *Mix) Wait() ([]ScenarioInfo, error) {
	<-m.done
	return m.infos, m.err
}

// maxMixInfos bounds what an endless mix remembers.
const maxMixInfos = 10000

// StartMix starts spec.Count scenarios at spec.Rate, each of a kind and
// timing drawn from spec.Seed, overlapping in time as calls on a PBX do.
// It stops starting new ones when ctx ends or the server closes; those
// running stop at their next wait.
func (s *Server) StartMix(ctx context.Context, spec MixSpec) *Mix {
	m := &Mix{done: make(chan struct{})}
	if spec.Rate <= 0 {
		spec.Rate = 100
	}
	kinds := spec.Kinds
	if kinds == nil {
		kinds = s.Kinds()
	}
	rng := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x9e3779b97f4a7c15))
	next := func() (ScenarioKind, Timing) {
		var t Timing
		k := kinds[rng.IntN(len(kinds))]
		if spec.MaxRing > 0 {
			t.Ring = time.Duration(rng.Int64N(int64(spec.MaxRing)))
		}
		if spec.MaxTalk > 0 {
			t.Talk = time.Duration(rng.Int64N(int64(spec.MaxTalk)))
		}
		return k, t
	}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		m.err = ErrServerClosed
		close(m.done)
		return m
	}
	// The mix's goroutine is owned by the server (Close waits for it);
	// it owns the scenario goroutines and waits for them before Done.
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(m.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		interval := time.Duration(float64(time.Second) / spec.Rate)
		for i := 0; spec.Count <= 0 || i < spec.Count; i++ {
			if i > 0 {
				if err := s.sleep(ctx, interval); err != nil {
					m.fail(err)
					return
				}
			}
			kind, t := next()
			wg.Add(1)
			go func() {
				defer wg.Done()
				info, err := s.PlayScenario(ctx, kind, t)
				m.mu.Lock()
				m.infos = append(m.infos, info)
				if len(m.infos) > maxMixInfos {
					m.infos = slices.Delete(m.infos, 0, len(m.infos)-maxMixInfos)
				}
				m.mu.Unlock()
				if err != nil {
					m.fail(err)
				}
			}()
		}
	}()
	return m
}

func (m *Mix) fail(err error) {
	m.mu.Lock()
	if m.err == nil {
		m.err = err
	}
	m.mu.Unlock()
}
