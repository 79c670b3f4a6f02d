package bridge

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// Bounds New holds ServerConfig and JetStreamOptions to.
const (
	maxActionSessions     = 64    // each is a login, a micro service and an Asterisk thread
	maxMaxPendingRequests = 65536 // ServerConfig.MaxPendingRequests
	maxReplicas           = 5     // the most replicas JetStream gives a stream
)

// Problem is one thing wrong in the configuration given to New, named by
// its field, so that a program that reads its configuration from a file
// can name the key the operator wrote.
type Problem struct {
	// Server is the index, in the servers given, of the PBX the problem
	// is about; -1 for Options.
	Server int
	// Field is the field at fault as Go spells it from ServerConfig or
	// Options, with the index of a list entry: "ActionSessions",
	// "EventsInclude[2]", "JetStream.Replicas", "HA.LeaseTTL",
	// "ReplyPrefixes[0]". It is "" for a problem of the list of servers
	// as a whole.
	Field string
	// Msg says what is wrong and what is wanted. It never holds a secret.
	Msg string
}

// Error implements error: "servers[1].ActionSessions: 0: want 1 to 64".
func (p Problem) Error() string {
	where := p.Field
	switch {
	case p.Server < 0 && p.Field == "":
		where = "servers"
	case p.Server >= 0:
		where = fmt.Sprintf("servers[%d]", p.Server)
		if p.Field != "" {
			where += "." + p.Field
		}
	}
	return where + ": " + p.Msg
}

// Check returns every problem New finds in servers and opts, and needs
// no NATS connection: a program can check its configuration before it
// connects anywhere. New also checks the connections it is given: their
// inbox prefixes against the reply prefixes (see Options.ReplyPrefixes).
func Check(servers []ServerConfig, opts Options) []Problem {
	_, out := checkOptions(opts)
	if len(servers) == 0 {
		out = append(out, Problem{Server: -1, Msg: "at least one PBX is required"})
	}
	first := map[string]int{}
	for i, sc := range servers {
		_, _, ps := checkServer(sc)
		for _, p := range ps {
			p.Server = i
			out = append(out, p)
		}
		if j, dup := first[sc.Name]; dup && sc.Name != "" {
			out = append(out, Problem{Server: i, Field: "Name", Msg: fmt.Sprintf("%q is already the name of servers[%d]", sc.Name, j)})
		} else if !dup {
			first[sc.Name] = i
		}
	}
	return out
}

// problems collects Problems of one struct, Options or a ServerConfig.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Server: -1, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// checkGlob returns an error when pattern is not a glob the bridge can
// use in ServerConfig's EventsInclude, EventsExclude, ActionsAllow and
// ActionsDeny (the syntax is in glob.go). It refuses a blank pattern, a
// '[' without its ']', an empty class and a reversed range.
func checkGlob(pattern string) error {
	p := strings.TrimSpace(pattern)
	if p == "" {
		return errors.New("empty pattern")
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '[' {
			continue
		}
		_, width, valid := matchClass(p[i:], 'a')
		if !valid {
			return fmt.Errorf("%q is not a valid glob: a character class needs a closing ']', at least one member and ranges low-high", pattern)
		}
		i += width - 1
	}
	return nil
}

// checkGlobs checks every glob list of sc, naming each bad pattern.
func checkGlobs(ps *problems, sc ServerConfig) {
	for _, l := range []struct {
		field string
		globs []string
	}{
		{"EventsInclude", sc.EventsInclude},
		{"EventsExclude", sc.EventsExclude},
		{"ActionsAllow", sc.ActionsAllow},
		{"ActionsDeny", sc.ActionsDeny},
	} {
		for i, g := range l.globs {
			if err := checkGlob(g); err != nil {
				ps.add(fmt.Sprintf("%s[%d]", l.field, i), "%v", err)
			}
		}
	}
}

// checkReplyPrefixes checks Options.ReplyPrefixes against the subject
// prefix and subjects.InboxPrefix, the inbox prefix a bridge's connection
// is meant to use; New checks them against its connections' own too.
func checkReplyPrefixes(ps *problems, o Options) {
	for i, rp := range o.ReplyPrefixes {
		if err := checkReplyPrefix(rp, o.Prefix, subjects.InboxPrefix); err != nil {
			ps.add(fmt.Sprintf("ReplyPrefixes[%d]", i), "%q: %v", rp, err)
		}
	}
}

// haProblem names the field of a problem withHADefaults found.
func haProblem(err error) Problem {
	msg := err.Error()
	for _, f := range []struct{ prefix, field string }{
		{"ha needs ", "HA.Enabled"},
		{"ha lease ttl ", "HA.LeaseTTL"},
		{"ha checkpoint interval ", "HA.CheckpointInterval"},
	} {
		if rest, ok := strings.CutPrefix(msg, f.prefix); ok {
			if f.field == "HA.Enabled" {
				rest = "needs " + rest
			}
			return Problem{Server: -1, Field: f.field, Msg: rest}
		}
	}
	return Problem{Server: -1, Field: "HA", Msg: msg}
}
