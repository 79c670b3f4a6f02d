package bridge

import (
	"context"
	"strings"
	"sync"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// The per-action subjects, <prefix>.<server>.action.<Action>, exist so
// that NATS permissions can name actions. NATS compares subjects byte for
// byte and Asterisk compares action names ignoring case, so each action
// is served under one spelling only: the one the PBX's ListCommands
// gives, read by each action session on its first request there. Every
// other case, and every name the list lacks, is a 400: a deny on
// ami.pbx1.action.Originate cannot be passed by ami.pbx1.action.originate,
// nor by an action a module registers after the list was read (it is
// served from the session's next login).

// builtinActions are the spellings of the captured Asterisk 22.10 and
// 13.38 ListCommands (amiproto/amitest/data), for a PBX whose
// ListCommands fails.
const builtinActions = `AOCMessage AbsoluteTimeout Atxfer BlindTransfer Bridge BridgeDestroy
BridgeInfo BridgeKick BridgeList BridgeTechnologyList
BridgeTechnologySuspend BridgeTechnologyUnsuspend CancelAtxfer
Challenge Command ConfbridgeKick ConfbridgeList ConfbridgeListRooms
ConfbridgeLock ConfbridgeMute ConfbridgeSetSingleVideoSrc
ConfbridgeStartRecord ConfbridgeStopRecord ConfbridgeUnlock
ConfbridgeUnmute CoreSettings CoreShowChannelMap CoreShowChannels
CoreStatus CreateConfig DBDel DBDelTree DBGet DBGetTree DBPut DataGet
DeviceStateList DialplanExtensionAdd DialplanExtensionRemove Events
ExtensionState ExtensionStateList Filter GetConfig GetConfigJSON
Getvar Hangup IAXnetstats IAXpeerlist IAXpeers IAXregistry
ListCategories ListCommands LocalOptimizeAway LoggerRotate Login
Logoff MailboxCount MailboxStatus MessageSend ModuleCheck ModuleLoad
MuteAudio Originate Park ParkedCalls Parkinglots Ping PlayDTMF
PresenceState PresenceStateList QueueAdd QueueChangePriorityCaller
QueueLog QueueMemberRingInUse QueuePause QueuePenalty QueueReload
QueueRemove QueueReset QueueRule QueueStatus QueueSummary
QueueWithdrawCaller Queues Redirect Reload SendFlash SendText Setvar
ShowDialPlan Status UpdateConfig UserEvent WaitEvent`

// builtinActionNames returns builtinActions by lower-cased name.
var builtinActionNames = sync.OnceValue(func() map[string]string {
	out := map[string]string{}
	for _, n := range strings.Fields(builtinActions) {
		out[strings.ToLower(n)] = n
	}
	return out
})

// listedActions returns the action names of a ListCommands response by
// lower-cased name: each line is "Name: synopsis  (Priv: classes)".
func listedActions(resp *amiproto.Response) map[string]string {
	out := map[string]string{}
	for _, f := range resp.Fields() {
		if strings.Contains(f.Value, "(Priv: ") && amiproto.ValidActionName(f.Key) {
			out[strings.ToLower(f.Key)] = f.Key
		}
	}
	return out
}

// actionNames returns the spellings s serves on the per-action subjects:
// its PBX's ListCommands, read on the first call, or the built-in names
// when that fails. s.run held.
func (p *pbx) actionNames(s *actionSession) map[string]string {
	if s.names != nil {
		return s.names
	}
	ctx, cancel := context.WithTimeout(p.life.hard, p.cfg.ActionTimeout)
	resp, err := s.c.ListCommands(ctx)
	cancel()
	var names map[string]string
	if err == nil {
		names = listedActions(resp)
	}
	if len(names) == 0 {
		s.l.log.Warn("ListCommands failed: the per-action subjects take the built-in spellings of Asterisk 22 and 13", "error", err)
		names = builtinActionNames()
	}
	s.names = names
	return names
}

// namedAction returns the action of a request on subject: the body's for
// the generic subject; for a per-action one, its token, which must be
// spelled as the session's names spell it, with the body's Action
// left out or the same.
func (p *pbx) namedAction(s *actionSession, subject string, data []byte) (*amiproto.Message, error) {
	token, named := namedToken(subject, p.ns.prefix, p.name)
	if !named {
		return decodeAction(data)
	}
	return decodeNamed(data, token, p.actionNames(s), p.ns.prefix, p.name)
}

// decodeNamed decodes a request on the per-action subject of token, which
// must be spelled as names (by lower-cased name) spell it.
func decodeNamed(data []byte, token string, names map[string]string, prefix, server string) (*amiproto.Message, error) {
	name, ok := names[strings.ToLower(token)]
	switch {
	case !ok:
		return nil, badRequestf("PBX %s lists no action %s in its ListCommands; per-action subjects are case-sensitive", server, quoteShort(token))
	case name != token:
		return nil, badRequestf("%s is not how PBX %s spells the action: use %s (NATS permissions are case-sensitive, so each action has one subject)", quoteShort(token), server, subjects.NamedAction(prefix, server, name))
	}
	return decodeActionAs(data, name)
}

// namedToken returns the action token of subject when it is a per-action
// subject of server, without allocating.
func namedToken(subject, prefix, server string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, prefix)
	for _, part := range []string{".", server, ".action."} {
		if !ok {
			break
		}
		rest, ok = strings.CutPrefix(rest, part)
	}
	return rest, ok
}
