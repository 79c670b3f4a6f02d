package amitest

import (
	"strconv"
	"sync"
	"time"
)

// callDuration is how long a generated call is up: its Cdr events say
// Duration 1, so "core show channels" lists a call for a second after
// it was played, as Asterisk would have while it ran.
const callDuration = time.Second

// maxLiveCalls bounds the generated calls "core show channels" lists: at
// thousands of calls a second it shows (and counts) the latest only.
const maxLiveCalls = 64

// liveCalls remembers the latest generated calls, so that "core show
// channels" shows the calls the event stream showed (Local/burst@test…),
// not only the Config.Channels ones. It copies a few words per call and
// allocates nothing.
type liveCalls struct {
	mu   sync.Mutex
	ring [maxLiveCalls]liveCall
	next int // where the next call goes
	n    int // calls in ring
}

// liveCall is what a generated call's channels are rebuilt from.
type liveCall struct {
	at     time.Time
	spec   *resolvedCall
	chanNo uint32
	uidNo  uint64
}

func (l *liveCalls) add(c *callRender, now time.Time) {
	l.mu.Lock()
	l.ring[l.next] = liveCall{at: now, spec: &c.spec, chanNo: c.chanNo, uidNo: c.uidNo}
	l.next = (l.next + 1) % maxLiveCalls
	l.n = min(l.n+1, maxLiveCalls)
	l.mu.Unlock()
}

// cliChan is one row of "core show channels": a Config.Channels channel or
// a leg of a generated call.
type cliChan struct {
	name, context, exten string
	priority             int
	app, appData, cidNum string
	uniqueid             string
	secs                 int
}

// cliChannels returns the rows of "core show channels": the
// Config.Channels channels still up, the scenarios' live channels, then
// both legs of every generated call played less than callDuration ago,
// oldest first.
func (s *Server) cliChannels() []cliChan {
	secs := s.upSeconds()
	var rows []cliChan
	s.liveChannels(func(c fakeChan) bool {
		rows = append(rows, cliChan{name: c.name, context: "test", exten: "long", priority: c.side,
			app: c.app, appData: c.appData, cidNum: c.cidNum, uniqueid: c.uniqueid, secs: secs})
		return true
	})
	now := time.Now()
	// The scenarios' channels, as the live model has them.
	s.live.mu.Lock()
	for _, c := range s.live.channels() {
		rows = append(rows, cliChan{name: c.name, context: c.context, exten: c.exten, priority: c.priority,
			app: c.app, appData: c.appData, cidNum: c.cidNum, uniqueid: c.uniqueid,
			secs: int(now.Sub(c.created) / time.Second)})
	}
	s.live.mu.Unlock()
	l := &s.pbx.live
	l.mu.Lock()
	calls := make([]liveCall, 0, l.n)
	for i := l.n; i > 0; i-- {
		if c := l.ring[(l.next-i+maxLiveCalls)%maxLiveCalls]; now.Sub(c.at) < callDuration {
			calls = append(calls, c)
		}
	}
	l.mu.Unlock()
	for _, c := range calls {
		base := c.spec.device + "-" + string(appendHex8(nil, c.chanNo))
		uid := strconv.FormatInt(c.at.Unix(), 10) + "."
		app, data := c.spec.app, c.spec.data
		if app == "" {
			app, data = "Wait", "1"
		}
		// Leg 1 runs the Originate's application; leg 2 waits at
		// priority 2 of the dialled extension, as the events say.
		row := cliChan{name: base + ";1", context: c.spec.context, exten: c.spec.exten, priority: 1,
			app: app, appData: data, cidNum: c.spec.cidNum, uniqueid: uid + strconv.FormatUint(c.uidNo, 10),
			secs: int(now.Sub(c.at) / time.Second)}
		rows = append(rows, row)
		row.name, row.priority, row.app, row.appData = base+";2", 2, "Wait", "1"
		row.uniqueid = uid + strconv.FormatUint(c.uidNo+1, 10)
		rows = append(rows, row)
	}
	return rows
}
