package bridge

import (
	"fmt"
	"strings"
)

// alwaysRefused are the actions the bridge never forwards, whatever the
// allow and deny lists say: it owns its AMI sessions. Login, Logoff and
// Challenge would log a session off or in as someone else; Events and
// Filter set a session's event mask and filters, and Asterisk has no
// manager.conf class to refuse them, so one request could silence the
// event stream while the status still says connected.
var alwaysRefused = []string{"Login", "Logoff", "Challenge", "Events", "Filter"}

// actionPolicy decides which actions a PBX takes from NATS. The matching is
// case-insensitive, as Asterisk matches action names.
type actionPolicy struct {
	allow globList // empty: every action
	deny  globList
}

func newActionPolicy(allow, deny []string) actionPolicy {
	return actionPolicy{allow: normalizeGlobs(allow), deny: normalizeGlobs(deny)}
}

// refuse returns why action is refused, or "" when it may go to Asterisk.
func (p actionPolicy) refuse(action string) string {
	for _, name := range alwaysRefused {
		if strings.EqualFold(action, name) {
			return fmt.Sprintf("action %s is refused: the bridge owns its AMI sessions, their logins, event masks and filters", name)
		}
	}
	if p.deny.match(action) {
		return fmt.Sprintf("action %s is denied by the policy of this PBX", action)
	}
	if len(p.allow) > 0 && !p.allow.match(action) {
		return fmt.Sprintf("action %s is not in the allow list of this PBX", action)
	}
	return ""
}

// maxFilterCache bounds the per-name decisions an eventFilter remembers.
// Asterisk has a few hundred event names; UserEvent names are free-form
// but still few in practice.
const maxFilterCache = 4096

// eventFilter decides which events are published: those that match an
// include glob (every event when there is none) and no exclude glob. Its
// cache is used by one goroutine only, the event session's reader.
type eventFilter struct {
	include, exclude globList
	cache            map[string]bool
}

func newEventFilter(include, exclude []string) *eventFilter {
	return &eventFilter{
		include: normalizeGlobs(include),
		exclude: normalizeGlobs(exclude),
		cache:   make(map[string]bool),
	}
}

func (f *eventFilter) pass(name string) bool {
	if len(f.include) == 0 && len(f.exclude) == 0 {
		return true
	}
	if ok, seen := f.cache[name]; seen {
		return ok
	}
	ok := (len(f.include) == 0 || f.include.match(name)) && !f.exclude.match(name)
	if len(f.cache) < maxFilterCache {
		f.cache[name] = ok
	}
	return ok
}
