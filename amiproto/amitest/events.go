package amitest

import (
	"strconv"
	"strings"
)

// Event classes, with Asterisk's bit values so that a numeric EventMask
// means what it means to Asterisk.
const (
	classSystem    uint32 = 1 << 0
	classCall      uint32 = 1 << 1
	classLog       uint32 = 1 << 2
	classVerbose   uint32 = 1 << 3
	classCommand   uint32 = 1 << 4
	classAgent     uint32 = 1 << 5
	classUser      uint32 = 1 << 6
	classConfig    uint32 = 1 << 7
	classDTMF      uint32 = 1 << 8
	classReporting uint32 = 1 << 9
	classCDR       uint32 = 1 << 10
	classDialplan  uint32 = 1 << 11
	classOriginate uint32 = 1 << 12
	classAGI       uint32 = 1 << 13
	classCC        uint32 = 1 << 14
	classAOC       uint32 = 1 << 15
	classTest      uint32 = 1 << 16
	classSecurity  uint32 = 1 << 17
	classMessage   uint32 = 1 << 18
	classAll       uint32 = 1<<19 - 1
)

var classNames = map[string]uint32{
	"system": classSystem, "call": classCall, "log": classLog, "verbose": classVerbose,
	"command": classCommand, "agent": classAgent, "user": classUser, "config": classConfig,
	"dtmf": classDTMF, "reporting": classReporting, "cdr": classCDR, "dialplan": classDialplan,
	"originate": classOriginate, "agi": classAGI, "cc": classCC, "aoc": classAOC,
	"test": classTest, "security": classSecurity, "message": classMessage,
}

// parseEventMask reads a Login "Events:" or an Events "EventMask:" value as
// Asterisk does: on/yes/true is everything, off/no/false nothing, digits a
// bit mask, otherwise a comma list of class names (unknown ones ignored).
func parseEventMask(v string) uint32 {
	v = strings.TrimSpace(v)
	switch strings.ToLower(v) {
	case "on", "yes", "true", "y", "t", "1":
		return classAll
	case "off", "no", "false", "n", "f", "0":
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return uint32(n) & classAll
	}
	var m uint32
	for _, name := range strings.Split(v, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "all" {
			return classAll
		}
		m |= classNames[name]
	}
	return m
}

// eventClasses reads the classes of an event from its Privilege value. An
// event without one reaches every session with events on.
func eventClasses(privilege string) uint32 {
	var m uint32
	for _, name := range strings.Split(privilege, ",") {
		if c, ok := classNames[strings.ToLower(strings.TrimSpace(name))]; ok {
			m |= c
		}
	}
	if m == 0 {
		return classAll
	}
	return m
}

// eventBatch is a run of serialised events with the end offset and the
// classes of each, so that one rendering serves every session's mask.
type eventBatch struct {
	buf     []byte
	ends    []int
	classes []uint32
	union   uint32
}

func (b *eventBatch) reset() {
	b.buf, b.ends, b.classes, b.union = b.buf[:0], b.ends[:0], b.classes[:0], 0
}

// end closes the event that started at the previous end.
func (b *eventBatch) end(class uint32) {
	b.buf = append(b.buf, '\r', '\n')
	b.ends = append(b.ends, len(b.buf))
	b.classes = append(b.classes, class)
	b.union |= class
}

func (b *eventBatch) events() int { return len(b.ends) }

// broadcastOne sends one serialised event to every session that takes its
// classes.
func (s *Server) broadcastOne(msg []byte, class uint32) {
	for _, ss := range *s.subs.Load() {
		if ss.mask.Load()&class != 0 {
			ss.enqueueEvent(msg)
		}
	}
}

// broadcast sends a batch to every logged-in session. A session whose mask
// takes every class in the batch gets it in one copy; others get the
// matching events in contiguous runs.
func (s *Server) broadcast(b *eventBatch) {
	if len(b.ends) == 0 {
		return
	}
	for _, ss := range *s.subs.Load() {
		mask := ss.mask.Load()
		switch {
		case mask == 0:
		case mask&b.union == b.union:
			ss.enqueueEvent(b.buf)
		default:
			start, runStart := 0, -1
			for i, end := range b.ends {
				if b.classes[i]&mask != 0 {
					if runStart < 0 {
						runStart = start
					}
				} else if runStart >= 0 {
					ss.enqueueEvent(b.buf[runStart:start])
					runStart = -1
				}
				start = end
			}
			if runStart >= 0 {
				ss.enqueueEvent(b.buf[runStart:start])
			}
		}
	}
}
