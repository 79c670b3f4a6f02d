package bridge

import (
	"fmt"
	"strings"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// alwaysRefused are the actions the bridge never forwards, whatever the
// allow and deny lists say: it owns its AMI sessions. Login, Logoff and
// Challenge would log a session off or in as someone else; Events and
// Filter set a session's event mask and filters, and Asterisk has no
// manager.conf class to refuse them, so one request could silence the
// event stream while the status still says connected.
var alwaysRefused = []string{"Login", "Logoff", "Challenge", "Events", "Filter"}

// configActions read or write Asterisk's configuration files, manager.conf
// and its secrets included. They are refused unless the allow list names
// them (see names).
var configActions = []string{"GetConfig", "GetConfigJSON", "UpdateConfig", "CreateConfig"}

// OriginateSystem is the allow-list entry that lets through an Originate
// that Asterisk runs only for a manager.conf user with the system write
// class (see originateNeedsSystem): no action is spelled so, and a glob
// never stands for it.
const OriginateSystem = "Originate/system"

// actionPolicy decides which actions a PBX takes from NATS. Every name it
// sees is a valid action name (amiproto.ValidActionName: ASCII letters,
// digits and '_'), and every comparison ignores ASCII case, as Asterisk
// looks actions up: one spelling, one comparison.
type actionPolicy struct {
	allow globList // empty: every action
	deny  globList
}

func newActionPolicy(allow, deny []string) actionPolicy {
	return actionPolicy{allow: normalizeGlobs(allow), deny: normalizeGlobs(deny)}
}

// refuse returns why action is refused, or "" when it may go to Asterisk.
// It reads the whole action: whether an Originate is safe depends on its
// Application and Data.
func (p actionPolicy) refuse(action *amiproto.Message) string {
	name := action.Name()
	if !amiproto.ValidActionName(name) {
		// decodeAction refuses these first; the check keeps the policy
		// sound on its own.
		return fmt.Sprintf("action %s is not an action name", quoteShort(name))
	}
	for _, n := range alwaysRefused {
		if strings.EqualFold(name, n) {
			return fmt.Sprintf("action %s is refused: the bridge owns its AMI sessions, their logins, event masks and filters", n)
		}
	}
	if p.deny.match(name) {
		return fmt.Sprintf("action %s is denied by the policy of this PBX", name)
	}
	if len(p.allow) > 0 && !p.allow.match(name) {
		return fmt.Sprintf("action %s is not in the allow list of this PBX", name)
	}
	for _, n := range configActions {
		if strings.EqualFold(name, n) && !p.names(n) {
			return fmt.Sprintf("action %s is refused by default: it reads or writes Asterisk's configuration files, the AMI secrets of manager.conf included; to allow it, name %s in the allow list of this PBX (a glob such as * does not count)", n, n)
		}
	}
	if strings.EqualFold(name, "Originate") && !p.names(OriginateSystem) {
		if why := originateNeedsSystem(action); why != "" {
			return fmt.Sprintf("Originate refused by default: %s, which Asterisk runs only for a manager.conf user with the system write class; to allow it, add %q to the allow list of this PBX", why, OriginateSystem)
		}
	}
	return ""
}

// names reports whether the allow list names entry itself, not through a
// glob: the safe defaults are lifted only on purpose, never by "*".
func (p actionPolicy) names(entry string) bool {
	for _, pat := range p.allow {
		if strings.EqualFold(pat, entry) {
			return true
		}
	}
	return false
}

// originateNeedsSystem returns why Asterisk would refuse action, an
// Originate, to a user without the system write class, or "". It applies
// originate_app_permissions of main/manager.c (Asterisk 22.10.1) to every
// Application and Data field: Asterisk reads the first of each, after the
// bytes below 0x21; reading all of them, a repeated key hides nothing. As
// in Asterisk, nothing is checked when no Application is given.
func originateNeedsSystem(action *amiproto.Message) string {
	apps, data := action.Values("Application"), action.Values("Data")
	for _, app := range apps {
		if app = skipBlanks(app); app == "" {
			continue
		}
		if len(data) == 0 {
			if why := appNeedsSystem(app, ""); why != "" {
				return why
			}
		}
		for _, d := range data {
			if why := appNeedsSystem(app, skipBlanks(d)); why != "" {
				return why
			}
		}
	}
	return ""
}

// systemApps are matched anywhere in the application, ignoring case
// (strcasestr): AGI, EAGI, Exec, ExecIf, System, TrySystem, MixMonitor, ...
var systemApps = []string{"agi", "dbdeltree", "exec", "externalivr", "mixmonitor", "originate", "reload", "system"}

// systemFuncs are matched anywhere in the application data, case
// sensitively (strstr): the dialplan functions that reach the shell, files,
// databases or the network.
var systemFuncs = []string{"CURL", "DB", "EVAL", "FILE", "ODBC", "REALTIME", "SHELL"}

// appNeedsSystem is is_originate_app_permitted of Asterisk for a user
// without the system class: why app with data would be refused, or "".
func appNeedsSystem(app, data string) string {
	lower := asciiLower(app)
	for _, s := range systemApps {
		if strings.Contains(lower, s) {
			return fmt.Sprintf("application %s contains %q", quoteShort(app), s)
		}
	}
	if strings.Contains(lower, "queue") && data != "" {
		// Queue(queuename,options,URL,announceoverride,timeout,AGI,...)
		if args := separateAppArgs(data, 9); len(args) > 5 && args[5] != "" {
			return fmt.Sprintf("application %s is given an AGI argument", quoteShort(app))
		}
	}
	for _, f := range systemFuncs {
		if strings.Contains(data, f) {
			return fmt.Sprintf("the application data contains %q", f)
		}
	}
	return ""
}

// separateAppArgs splits data as Asterisk's AST_STANDARD_APP_ARGS does
// (__ast_app_separate_args with ',' and remove_chars, main/app.c) into at
// most n arguments: a ',' inside (), [] or "" does not split, quotes are
// removed, a '\' makes the next byte literal and goes, and the last
// argument takes the rest as it is.
func separateAppArgs(data string, n int) []string {
	var args []string
	var cur []byte
	paren, bracket, quote := 0, 0, false
	i := 0
	for i < len(data) && len(args) < n-1 {
		cur = cur[:0]
		split := false
		for ; i < len(data); i++ {
			c := data[i]
			switch {
			case c == '(':
				paren++
			case c == ')':
				if paren > 0 {
					paren--
				}
			case c == '[':
				bracket++
			case c == ']':
				if bracket > 0 {
					bracket--
				}
			case c == '"':
				quote = !quote
				continue
			case c == '\\':
				if i+1 < len(data) {
					i++
					cur = append(cur, data[i])
				}
				continue
			case c == ',' && paren == 0 && !quote && bracket == 0:
				split = true
			}
			if split {
				i++
				break
			}
			cur = append(cur, c)
		}
		args = append(args, string(cur))
		if split && i == len(data) {
			args = append(args, "") // a trailing ',' ends with an empty argument
		}
	}
	if i < len(data) {
		args = append(args, data[i:])
	}
	return args
}

// skipBlanks drops the bytes below 0x21 at the start of s, as Asterisk's
// ast_skip_blanks does to every header value it reads.
func skipBlanks(s string) string {
	i := 0
	for i < len(s) && s[i] < 0x21 {
		i++
	}
	return s[i:]
}

// asciiLower lowers ASCII letters only, as strcasestr compares.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lower(b[j])
			}
			return string(b)
		}
	}
	return s
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
		// name is the reader's (a borrowed event's, or shed's view of
		// the socket's buffer), which the next read overwrites.
		f.cache[strings.Clone(name)] = ok
	}
	return ok
}
