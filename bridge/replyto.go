package bridge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// A request names the subject of its reply, and the bridge publishes
// there with its own NATS permissions: a reply aimed at
// $JS.API.STREAM.PURGE.<stream> would empty the event stream, one aimed
// at an event subject would forge an event. So the bridge answers only
// on inboxes: subjects under _INBOX. (nats.go's default inbox prefix),
// or under Options.ReplyPrefixes, and never under its own connection's
// inbox prefix. Every event the bridge publishes into JetStream carries
// the inbox of its publish ack as its reply subject, seen by every
// subscriber of the events: answered there, a request would forge or
// break an ack. The bridge's connections (the main one and
// Options.ServiceConn) therefore need an inbox prefix of their own
// (nats.CustomInboxPrefix), which New checks, and no reply goes under
// either.

// defaultReplyPrefix is nats.go's inbox prefix, as nats.CustomInboxPrefix
// would take it: replies under "_INBOX." are always allowed.
const defaultReplyPrefix = "_INBOX"

// replyRule decides whether the bridge may answer on a reply subject.
type replyRule struct {
	allowed []string // "_INBOX." and each of Options.ReplyPrefixes, with a trailing dot
	own     []string // the connections' inbox prefixes, each with a trailing dot
	prefix  string   // the bridge's subject prefix, with a trailing dot
}

// newReplyRule checks the reply prefixes against the bridge's subject
// prefix and the inbox prefix of each of its connections
// (nc.Opts.InboxPrefix, "" for nats.go's default).
func newReplyRule(replyPrefixes []string, subjectPrefix string, ownInboxes ...string) (*replyRule, error) {
	r := &replyRule{prefix: subjectPrefix + "."}
	for _, own := range ownInboxes {
		if own == "" || own == defaultReplyPrefix {
			return nil, fmt.Errorf("a NATS connection of the bridge uses nats.go's default inbox prefix %s, as requesters do: "+
				"a request could aim its reply at the bridge's own JetStream acks and KV requests; "+
				"connect with nats.CustomInboxPrefix(subjects.InboxPrefix)", defaultReplyPrefix)
		}
		if !slices.Contains(r.own, own+".") {
			r.own = append(r.own, own+".")
		}
	}
	var errs []error
	for _, p := range append([]string{defaultReplyPrefix}, replyPrefixes...) {
		var err error
		for _, own := range ownInboxes {
			if err = checkReplyPrefix(p, subjectPrefix, own); err != nil {
				break
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reply prefix %q: %w", p, err))
			continue
		}
		r.allowed = append(r.allowed, p+".")
	}
	return r, errors.Join(errs...)
}

// checkReplyPrefix tells why the bridge may not answer on the subjects
// under prefix, an inbox prefix as nats.CustomInboxPrefix and
// `nats --inbox-prefix` take it: nil when it may. subjectPrefix is the
// bridge's subject prefix (Options.Prefix), ownInbox the inbox prefix of
// the bridge's NATS connection.
func checkReplyPrefix(prefix, subjectPrefix, ownInbox string) error {
	if err := checkSubject(prefix); err != nil {
		return err
	}
	switch {
	case prefix[0] == '$':
		return errors.New("subjects starting with $ belong to NATS ($JS, $KV, $SYS, $SRV, …): never a reply")
	case overlaps(prefix, subjectPrefix):
		return fmt.Errorf("it covers or lies under the bridge's own subjects %s.>", subjectPrefix)
	case ownInbox != "" && (prefix == ownInbox || strings.HasPrefix(prefix, ownInbox+".")):
		return fmt.Errorf("it lies under the bridge's own inbox prefix %s", ownInbox)
	}
	return nil
}

// checkSubject refuses what is not a literal subject: an empty token,
// a wildcard, a blank or a control character.
func checkSubject(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return errors.New("an empty token (a leading, trailing or double dot)")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '*' || c == '>' || c <= ' ' || c == 0x7f {
			return errors.New("a wildcard, a blank or a control character")
		}
	}
	return nil
}

// overlaps reports whether a.> and b.> share subjects: whether one is a
// whole-token prefix of the other.
func overlaps(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	return a == b || strings.HasPrefix(b, a+".")
}

// allows reports whether the bridge may answer on reply, a non-empty
// reply subject.
func (r *replyRule) allows(reply string) bool {
	if checkSubject(reply) != nil || reply[0] == '$' || strings.HasPrefix(reply, r.prefix) {
		return false
	}
	for _, own := range r.own {
		if strings.HasPrefix(reply, own) {
			return false
		}
	}
	for _, p := range r.allowed {
		if len(reply) > len(p) && strings.HasPrefix(reply, p) {
			return true
		}
	}
	return false
}
