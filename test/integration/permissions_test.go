package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// permChannels is the size of the collection streamed through the
// recipe's permissions: enough messages that a one-reply limit shows.
const permChannels = 50

// securityDoc is the page that holds the permissions recipe, from this
// package's directory.
var securityDoc = filepath.Join("..", "..", "docs", "security.md")

// permissionsHeading is the section of securityDoc with the recipe.
const permissionsHeading = "## Permissions"

// recipeUsers returns the users of the nats-server authorization block
// that docs/security.md shows under "## Permissions", read by
// nats-server's own configuration parser, so that the tests below fail
// when the page drifts. Each "$<NAME>_PASS" placeholder becomes
// passwords[<name>] (name in lower case, "_" as "-": $BRIDGE_SERVICE_PASS
// is bridge-service's); the page's users must be exactly the keys of
// passwords.
func recipeUsers(t *testing.T, passwords map[string]string) []*server.User {
	t.Helper()
	blocks := docBlocks(t, securityDoc, permissionsHeading)
	if len(blocks) == 0 {
		t.Fatalf("%s: no code block in the %q section", securityDoc, permissionsHeading)
	}
	block := blocks[0]
	// Quoted or not, so that the test keeps reading the page if it
	// switches to nats-server's unquoted environment references.
	placeholder := regexp.MustCompile(`"?\$([A-Z][A-Z_]*)_PASS"?`)
	block = placeholder.ReplaceAllStringFunc(block, func(s string) string {
		name := strings.ReplaceAll(strings.ToLower(placeholder.FindStringSubmatch(s)[1]), "_", "-")
		pass, ok := passwords[name]
		if !ok {
			t.Errorf("docs/security.md permissions: unexpected password placeholder %s", s)
		}
		return strconv.Quote(pass)
	})
	conf := filepath.Join(t.TempDir(), "permissions.conf")
	if err := os.WriteFile(conf, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server does not accept the permissions block of docs/security.md: %v\n%s", err, block)
	}
	var names []string
	for _, u := range opts.Users {
		names = append(names, u.Username)
		if want, ok := passwords[u.Username]; ok && u.Password != want {
			t.Errorf("docs/security.md permissions: user %s does not take its password from $%s", u.Username, passVar(u.Username))
		}
	}
	var want []string
	for name := range passwords {
		want = append(want, name)
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("docs/security.md permissions: users %v, want %v", names, want)
	}
	return opts.Users
}

// passVar is the environment variable of user's password in the recipe.
func passVar(user string) string {
	return strings.ToUpper(strings.ReplaceAll(user, "-", "_")) + "_PASS"
}

// recipeUserNames are the users of the recipe's authorization block.
var recipeUserNames = []string{"bridge", "bridge-service", "reader", "operator", "crm", "analytics", "dialer", "dashboard", "supervisor"}

// inboxOf is the inbox prefix of a user of the recipe: the one its
// subscribe allow names.
func inboxOf(user string) string { return "_INBOX." + user }

// readmeBlocks returns the fenced code blocks of the README.md section
// under heading (a whole line, such as "### Config and run"), up to the
// next heading.
func readmeBlocks(t *testing.T, heading string) []string {
	t.Helper()
	return docBlocks(t, filepath.Join("..", "..", "README.md"), heading)
}

// docPage is the path of the page name (such as "jetstream.md") of docs/.
func docPage(name string) string { return filepath.Join("..", "..", "docs", name) }

// docBlocks returns the fenced code blocks of the section of the
// Markdown file path under heading, up to the next heading.
func docBlocks(t *testing.T, path, heading string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no %q section", path, heading)
	}
	var blocks []string
	var cur []string
	inFence := false
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.HasPrefix(line, "```") && inFence:
			blocks = append(blocks, strings.Join(cur, "\n"))
			cur, inFence = nil, false
		case strings.HasPrefix(line, "```"):
			inFence = true
		case inFence:
			cur = append(cur, line)
		case strings.HasPrefix(line, "#"):
			return blocks
		}
	}
	return blocks
}

// shellWords splits a docs command line as sh would: words, single
// and double quotes, and "$NAME" replaced from vars (an unknown name
// fails the test). A trailing "# comment" is dropped.
func shellWords(t *testing.T, line string, vars map[string]string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				t.Fatalf("unclosed quote in %q", line)
			}
			w.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				t.Fatalf("unclosed quote in %q", line)
			}
			w.WriteString(expandVars(t, line[i+1:i+1+j], vars))
			i += j + 1
			inWord = true
		case c == '#' && !inWord:
			return words
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

var shellVar = regexp.MustCompile(`\$([A-Z_]+)`)

func expandVars(t *testing.T, s string, vars map[string]string) string {
	return shellVar.ReplaceAllStringFunc(s, func(v string) string {
		val, ok := vars[v[1:]]
		if !ok {
			t.Errorf("docs command uses $%s, which the test does not know", v[1:])
		}
		return val
	})
}

// recipeBridgeLogin returns the environment of the recipe's command that
// runs the bridge as the users "bridge" and "bridge-service" (the second
// block of "## Permissions" in docs/security.md), with $BRIDGE_PASS and
// $BRIDGE_SERVICE_PASS from pass.
func recipeBridgeLogin(t *testing.T, pass map[string]string) []string {
	t.Helper()
	blocks := docBlocks(t, securityDoc, permissionsHeading)
	if len(blocks) < 2 {
		t.Fatal(`docs/security.md: no command block after the authorization block in "## Permissions"`)
	}
	words := shellWords(t, strings.TrimSpace(blocks[1]), map[string]string{"BRIDGE_PASS": pass["bridge"], "BRIDGE_SERVICE_PASS": pass["bridge-service"]})
	var env []string
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env, words = append(env, words[0]), words[1:]
	}
	if len(words) < 3 || words[0] != "ami-bridge" || words[1] != "--config" {
		t.Fatalf("docs/security.md: the bridge's login command runs %q, want ami-bridge --config FILE", words)
	}
	want := []string{"AMI_BRIDGE_NATS__USER=bridge", "AMI_BRIDGE_NATS__PASSWORD=" + pass["bridge"],
		"AMI_BRIDGE_NATS__SERVICE__USER=bridge-service", "AMI_BRIDGE_NATS__SERVICE__PASSWORD=" + pass["bridge-service"]}
	if !slices.Equal(env, want) {
		t.Fatalf("docs/security.md: the bridge's login sets %q, want the user and password variables of both connections", env)
	}
	return env
}

// TestPermissions_DocsJetStreamRecipe runs the bridge with JetStream
// as the recipe's "bridge" user, and the durable consumer commands of
// docs/jetstream.md, verbatim, with the nats CLI as its "analytics" user.
func TestPermissions_DocsJetStreamRecipe(t *testing.T) {
	t.Parallel()
	w, pass := recipeWorld(t, true, nil)
	p := w.startPBX("pbx1", amitest.Config{Profile: amitest.Asterisk22})
	cfg := w.config(w.serverFor("pbx1", p, viaURL))
	cfg.JetStream = &jetStreamConf{Enabled: true} // the default stream, AMI_EVENTS
	cfg.extraEnv = recipeBridgeLogin(t, pass)
	b := w.startBridge(cfg)
	w.waitReady("pbx1")
	// More events than the recipe reads; the last one published means
	// all are in the stream.
	for i := range 12 {
		p.emit("ItStored", "Index", strconv.Itoa(i))
	}
	w.events.waitFor(t, 0, eventTimeout, "the last ItStored", func(m *nats.Msg) bool {
		f, err := parseFields(m.Data)
		return err == nil && f.value("Index") == "11"
	})

	blocks := docBlocks(t, docPage("jetstream.md"), "## A durable consumer")
	if len(blocks) == 0 {
		t.Fatal(`docs/jetstream.md: no command block in "## A durable consumer"`)
	}
	c := newCLI(w)
	var outs []string
	for _, line := range strings.Split(strings.TrimSpace(blocks[0]), "\n") {
		words := shellWords(t, line, nil)
		if len(words) == 0 || words[0] != "nats" {
			t.Fatalf("docs/jetstream.md: %q is not a nats command", line)
		}
		outs = append(outs, c.run(t, append([]string{"--user", "analytics", "--password", pass["analytics"], "--inbox-prefix", inboxOf("analytics")}, words[1:]...)...))
	}
	// "consumer next --count 10" printed ten stored events of pbx1.
	last := outs[len(outs)-1]
	if got := strings.Count(last, "ami.pbx1.event."); got != 10 {
		t.Errorf("the last docs/jetstream.md command printed %d events of pbx1, want 10:\n%s", got, last)
	}
	// The CLI acked them: the acks are fire-and-forget, so only the
	// consumer's ack floor (asked as the analytics user, which may) shows
	// that it may send them.
	bc, err := nats.Connect(w.ns.ClientURL(), nats.UserInfo("analytics", pass["analytics"]), nats.CustomInboxPrefix(inboxOf("analytics")))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	js, err := jetstream.New(bc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(replyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
		info, err := js.Consumer(ctx, "AMI_EVENTS", "analytics")
		var floor uint64
		if err == nil {
			floor = info.CachedInfo().AckFloor.Consumer
		}
		cancel()
		if floor == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer analytics: ack floor %d (%v), want the 10 messages the CLI acked", floor, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the server: the acks went out from another process
	}
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if out := b.log.Bytes(); strings.Contains(strings.ToLower(string(out)), "permissions violation") {
		t.Errorf("the bridge hit a permissions violation:\n%s", truncate(out, 8192))
	}
}

// newPasswords returns a fresh password for each name.
func newPasswords(names ...string) map[string]string {
	out := make(map[string]string, len(names))
	for _, n := range names {
		out[n] = "nats-" + n + "-" + rand.Text()
	}
	return out
}

// subscribeInbox subscribes nc to subject with a fresh inbox.
func subscribeInbox(t *testing.T, nc *nats.Conn, subject string) *inbox {
	t.Helper()
	in := &inbox{changed: make(chan struct{})}
	sub, err := nc.Subscribe(subject, in.add)
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return in
}

// TestPermissions_RecipeWorks runs the bridge as the user "bridge" of the
// authorization block of docs/security.md, with the test's client as
// "operator" and a second client as "reader", and checks that every user
// can do what the page says and the reader no more:
// the reader sees events and statuses but cannot send an action; the
// operator sees them too, runs actions, gets a streamed Collection whole
// (many replies to one request) and discovers the micro service.
func TestPermissions_RecipeWorks(t *testing.T) {
	t.Parallel()
	// The world's own client, which collects statuses and events and sends
	// the requests, is the operator.
	w, pass := recipeWorld(t, false, nil)
	p := w.startPBX("perm", amitest.Config{Profile: amitest.Asterisk22, Channels: permChannels})

	readerErrs := make(chan error, 16)
	rc, err := nats.Connect(w.ns.ClientURL(), nats.Name("reader"), nats.UserInfo("reader", pass["reader"]),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case readerErrs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as reader: %v", err)
	}
	t.Cleanup(rc.Close)
	// Subscribed before the bridge starts, so the first status is seen.
	readerStatus := subscribeInbox(t, rc, "ami.*.status")
	readerEvents := subscribeInbox(t, rc, "ami.*.event.>")

	cfg := w.config(w.serverFor("perm", p, viaURL))
	cfg.extraEnv = recipeBridgeLogin(t, pass)
	b := w.startBridge(cfg)
	// The operator receives statuses and events.
	w.waitReady("perm")

	t.Run("ReaderReceivesEventsAndStatus", func(t *testing.T) {
		readerStatus.waitFor(t, 0, readyTimeout, "the reader to see perm connected", func(m *nats.Msg) bool {
			s, err := parseStatus(m)
			return err == nil && m.Subject == "ami.perm.status" && s.State == "connected"
		})
		readerEvents.waitFor(t, 0, eventTimeout, "the reader to see an event", func(m *nats.Msg) bool {
			return m.Subject == "ami.perm.event.SuccessfulAuth"
		})
	})

	t.Run("ReaderCannotSendActions", func(t *testing.T) {
		body := []byte(`{"Action":"Ping"}`)
		if err := rc.Publish("ami.perm.action", body); err != nil {
			t.Fatalf("publish: %v", err)
		}
		// The server drops a denied message and says so: that is the
		// proof it never reached the bridge.
		deadline := time.After(replyTimeout)
		for denied := false; !denied; {
			select {
			case err := <-readerErrs:
				if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `"ami.perm.action"`) {
					t.Errorf("reader error %v, want only a permissions violation for publishing to ami.perm.action", err)
					continue
				}
				denied = true
			case <-deadline:
				t.Fatal("the reader's action request was not reported as a permissions violation")
			}
		}
	})

	t.Run("OperatorRunsActions", func(t *testing.T) {
		r := w.request("perm", `{"Action":"Ping","ActionID":"op-ping"}`)
		wantSuccess(t, r)
		if r.Response.value("Ping") != "Pong" || r.Response.value("ActionID") != "op-ping" {
			t.Errorf("Ping reply %v", r.Response)
		}
	})

	t.Run("OperatorGetsAStreamedCollectionWhole", func(t *testing.T) {
		msgs := w.streamRequest(t, "perm", `{"Action":"CoreShowChannels","ActionID":"op-stream"}`, permChannels+3)
		if len(msgs) != permChannels+3 {
			t.Fatalf("%d streamed messages, want envelope + %d entries + complete + terminator", len(msgs), permChannels)
		}
		wantSuccess(t, w.checkReply("perm", msgs[0]))
		for i, m := range msgs[1 : permChannels+1] {
			var ev struct{ Event string }
			if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Event != "CoreShowChannel" {
				t.Fatalf("entry %d is %s, want a CoreShowChannel event", i, truncate(m.Data, 200))
			}
		}
		complete, err := parseFields(msgs[permChannels+1].Data)
		if err != nil {
			t.Fatalf("complete: %v: %s", err, msgs[permChannels+1].Data)
		}
		if complete.value("Event") != "CoreShowChannelsComplete" || complete.value("ListItems") != strconv.Itoa(permChannels) {
			t.Errorf("complete = %v", complete)
		}
		if last := msgs[permChannels+2]; len(last.Data) != 0 {
			t.Errorf("terminator has a body: %s", truncate(last.Data, 200))
		}
	})

	t.Run("OperatorDiscoversTheService", func(t *testing.T) {
		m, err := w.nc.Request("$SRV.PING", nil, replyTimeout)
		if err != nil {
			t.Fatalf("$SRV.PING: %v", err)
		}
		var ping micro.Ping
		if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Name != "ami-bridge" || ping.Type != micro.PingResponseType {
			t.Fatalf("$SRV.PING reply %s (%v), want the ami-bridge service", m.Data, err)
		}
		m, err = w.nc.Request("$SRV.INFO.ami-bridge."+ping.ID, nil, replyTimeout)
		if err != nil {
			t.Fatalf("$SRV.INFO: %v", err)
		}
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil {
			t.Fatalf("$SRV.INFO reply %s: %v", m.Data, err)
		}
		if !slices.ContainsFunc(info.Endpoints, func(e micro.EndpointInfo) bool {
			return e.Subject == "ami.perm.action" && e.QueueGroup == "ami-bridge"
		}) {
			t.Errorf("$SRV.INFO endpoints %+v, want ami.perm.action in queue group ami-bridge", info.Endpoints)
		}
		// And the CLI the README points to, as the operator.
		c := newCLI(w)
		out := c.run(t, "--user", "operator", "--password", pass["operator"], "--inbox-prefix", inboxOf("operator"), "micro", "ls", "--json")
		if !strings.Contains(out, `"ami-bridge"`) {
			t.Errorf("nats micro ls as the operator does not list ami-bridge:\n%s", out)
		}
	})

	// Once stopped, the bridge's log is complete: no NATS permission was
	// missing on its side either (it logs asynchronous NATS errors).
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if out := b.log.Bytes(); strings.Contains(strings.ToLower(string(out)), "permissions violation") {
		t.Errorf("the bridge hit a permissions violation:\n%s", truncate(out, 8192))
	}
}

// TestPermissions_StreamedRepliesNeedTheInboxAllow checks the page's
// note on allow_responses: a streamed Collection is many replies to one
// request; the recipe's publish allow on _INBOX.> passes them all (as
// would allow_responses {max: -1}, which the recipe leaves out for the
// hole it opens), and allow_responses alone (one reply) lets no reply
// through at all. Each case is the recipe with the permissions of the bridge's
// service user, which sends the replies, changed.
func TestPermissions_StreamedRepliesNeedTheInboxAllow(t *testing.T) {
	t.Parallel()
	withoutInbox := func(p *server.Permissions) {
		p.Publish.Allow = slices.DeleteFunc(p.Publish.Allow, func(s string) bool { return s == "_INBOX.>" })
	}
	cases := []struct {
		name   string
		change func(*server.Permissions)
		whole  bool
	}{
		{"TheRecipe", func(p *server.Permissions) {
			if p.Response != nil {
				t.Errorf("the recipe gives the bridge allow_responses %+v", p.Response)
			}
		}, true},
		{"AllowResponsesUnlimitedAlone", func(p *server.Permissions) {
			withoutInbox(p)
			p.Response = &server.ResponsePermission{MaxMsgs: -1}
		}, true},
		{"AllowResponsesDefaultCutsShort", func(p *server.Permissions) {
			withoutInbox(p)
			// What `allow_responses: true` gives.
			p.Response = &server.ResponsePermission{MaxMsgs: server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION}
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w, pass := recipeWorld(t, false, func(users []*server.User) {
				for _, u := range users {
					if u.Username == "bridge-service" { // the connection that replies
						tc.change(u.Permissions)
					}
				}
			})
			p := w.startPBX("perm", amitest.Config{Profile: amitest.Asterisk22, Channels: permChannels})
			cfg := w.config(w.serverFor("perm", p, viaURL))
			cfg.extraEnv = recipeBridgeLogin(t, pass)
			b := w.startBridge(cfg)
			w.waitReady("perm")
			body := `{"Action":"CoreShowChannels"}`
			if tc.whole {
				if msgs := w.streamRequest(t, "perm", body, permChannels+3); len(msgs) != permChannels+3 {
					t.Fatalf("%d streamed messages, want %d", len(msgs), permChannels+3)
				}
				return
			}
			// One reply gets through (the envelope); the bridge is refused
			// the next and logs it. The stamps of the requests' arrivals
			// come on the main connection: a second delivery on the
			// service connection would use up the one reply allowed.
			sub, err := w.nc.SubscribeSync(w.nc.NewRespInbox())
			if err != nil {
				t.Fatal(err)
			}
			m := nats.NewMsg("ami.perm.action")
			m.Reply = sub.Subject
			m.Data = []byte(body)
			m.Header.Set("Ami-Stream", "true")
			if err := w.nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			first, err := sub.NextMsg(replyTimeout)
			if err != nil {
				t.Fatalf("no first streamed message: %v", err)
			}
			if r := w.checkReply("perm", first); r.Response.value("EventList") != "start" {
				t.Errorf("first streamed message %s, want the envelope", r)
			}
			b.log.waitFor(t, `Permissions Violation for Publish to \"`+sub.Subject+`\"`, replyTimeout, b.done)
		})
	}
}

// recipeSubjectCount returns how many messages of the stream AMI_EVENTS
// are on subject, and the stream's total, asked as the recipe's bridge
// user (which may look the stream up, unlike the operator).
func recipeSubjectCount(t *testing.T, w *world, pass map[string]string, subject string) (onSubject, total uint64) {
	t.Helper()
	js := recipeBridgeJS(t, w, pass)
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	s, err := js.Stream(ctx, "AMI_EVENTS")
	if err != nil {
		t.Errorf("stream AMI_EVENTS: %v", err)
		return 0, 0
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject], info.State.Msgs
}

// TestPermissions_HijacksChangeNothing runs the recipe of
// docs/security.md, the bridge with JetStream, and tries, as the
// operator, what a requester limited to ami.*.action and $SRV.> could do
// with the bridge's permissions before: aim a reply at the JetStream API
// (purge, delete the stream), at an event subject (a forged event), at the
// inbox of the bridge's own publish acks (read off an event), and make
// micro's $SRV.PING answer on the JetStream API. The stream keeps every
// message, no event is forged, and the bridge's log shows why. The
// operator also tries to read the other operator's replies: NATS refuses
// the subscription, and the other operator's request, run as the page
// shows it, gets its answer.
func TestPermissions_HijacksChangeNothing(t *testing.T) {
	t.Parallel()
	w, pass := recipeWorld(t, true, nil)
	// pbx1, the name in the page's commands.
	p := w.startPBX("pbx1", amitest.Config{Profile: amitest.Asterisk22})
	sc := w.serverFor("pbx1", p, viaURL)
	sc.ActionSessions = 1 // one queue: a request answered means the ones sent before were handled
	cfg := w.config(sc)
	cfg.JetStream = &jetStreamConf{Enabled: true} // the recipe's stream, AMI_EVENTS
	cfg.extraEnv = recipeBridgeLogin(t, pass)
	b := w.startBridge(cfg)
	w.waitReady("pbx1")
	for i := range 12 {
		p.emit("ItStored", "Index", strconv.Itoa(i))
	}
	_, last := w.events.waitFor(t, 0, eventTimeout, "the last ItStored", func(m *nats.Msg) bool {
		f, err := parseFields(m.Data)
		return err == nil && f.value("Index") == "11"
	})
	ackInbox := last.Reply
	if !strings.HasPrefix(ackInbox, subjects.InboxPrefix+".") {
		t.Fatalf("an event's reply subject is %q, want the bridge's ack inbox under %s", ackInbox, subjects.InboxPrefix)
	}
	const forged = "ami.pbx1.event.Hangup"
	_, stored := recipeSubjectCount(t, w, pass, forged)
	if stored < 12 {
		t.Fatalf("the stream holds %d messages, want at least the 12 ItStored", stored)
	}

	c := newCLI(w)
	op := []string{"--user", "operator", "--password", pass["operator"], "--inbox-prefix", inboxOf("operator")}
	for _, reply := range []string{"$JS.API.STREAM.PURGE.AMI_EVENTS", "$JS.API.STREAM.DELETE.AMI_EVENTS", forged, ackInbox} {
		c.run(t, append(op, "pub", "ami.pbx1.action", `{"Action":"Ping"}`, "--reply", reply, "-H", "Ami-Stream:true")...)
	}
	// Sent after the hijacks, on the one action session.
	wantSuccess(t, w.request("pbx1", `{"Action":"Ping"}`))
	checkStream := func(after string) {
		t.Helper()
		onForged, total := recipeSubjectCount(t, w, pass, forged)
		if total < stored || onForged != 0 {
			t.Errorf("after %s, the stream holds %d messages (%d on %s), want the %d stored and none forged", after, total, onForged, forged, stored)
		}
	}
	checkStream("the hijacking requests")
	for _, m := range w.events.snapshot() {
		if m.Subject == forged {
			t.Errorf("a message was published on %s: %s", forged, truncate(m.Data, 512))
		}
	}
	t.Run("OperatorCannotReadAnotherOperatorsReplies", func(t *testing.T) {
		errs := make(chan error, 16)
		oc, err := nats.Connect(w.ns.ClientURL(), nats.UserInfo("operator", pass["operator"]), nats.CustomInboxPrefix(inboxOf("operator")),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer oc.Close()
		spied := make(chan *nats.Msg, 16)
		for _, subject := range []string{inboxOf("crm") + ".>", "_INBOX.>"} {
			if _, err := oc.ChanSubscribe(subject, spied); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
					t.Errorf("subscribe %s as the operator: %v, want a permissions violation", subject, err)
				}
			case <-time.After(replyTimeout):
				t.Fatalf("the operator's subscription to %s was not refused", subject)
			}
		}
		// The page's commands, as each operator runs them.
		blocks := docBlocks(t, securityDoc, permissionsHeading)
		if len(blocks) < 3 {
			t.Fatal(`docs/security.md: no block of the operators' commands in "## Permissions"`)
		}
		vars := map[string]string{"OPERATOR_PASS": pass["operator"], "CRM_PASS": pass["crm"]}
		if ran := runDocSuccesses(t, c, blocks[2], vars); ran < 2 {
			t.Errorf("docs/security.md: %d operator commands, want one per operator", ran)
		}
		if len(spied) != 0 {
			t.Errorf("the operator read %d messages of another inbox", len(spied))
		}
	})

	// micro answers $SRV requests on any reply subject: only the
	// permissions of the service user stop these, and the bridge logs
	// NATS's refusal.
	srvReplies := []string{"$JS.API.STREAM.PURGE.AMI_EVENTS", "$JS.API.STREAM.DELETE.AMI_EVENTS", forged, "ami.pbx1.status",
		"$KV.ami_bridge_leases.pbx1"}
	srvHijack(t, w, srvReplies, b)
	checkStream("micro's $SRV answers")
	checkNoMicroJSON(t, w, forged)

	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(string(b.log.Bytes()), "its reply subject is not an inbox") {
		t.Error("the bridge did not log the requests it dropped for their reply subject")
	}
	checkOnlySRVViolations(t, b, srvReplies)
}

// srvBarrier is a reply subject no user of the recipe may publish to:
// micro's answer there, refused and logged, is the last of srvHijack's.
const srvBarrier = "$JS.API.STREAM.DELETE.SRV_HIJACK_BARRIER"

// srvHijack has the operator (the world's client) send micro's
// $SRV.PING, $SRV.INFO and $SRV.STATS requests, with and without the
// service name, each aimed at every one of replies, and waits until
// every bridge of bs has logged NATS's refusal of each, and of a last one
// aimed at srvBarrier: NATS answers a connection's publishes in order,
// so then every answer has been refused or let through.
func srvHijack(t *testing.T, w *world, replies []string, bs ...*bridgeProc) {
	t.Helper()
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		for _, subject := range []string{"$SRV." + verb, "$SRV." + verb + "." + subjects.ServiceName} {
			for _, reply := range replies {
				if err := w.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: []byte("{}")}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := w.nc.PublishMsg(&nats.Msg{Subject: "$SRV.PING", Reply: srvBarrier}); err != nil {
		t.Fatal(err)
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, p := range bs {
		for _, reply := range append(slices.Clone(replies), srvBarrier) {
			p.log.waitFor(t, `Permissions Violation for Publish to \"`+reply+`\"`, replyTimeout, p.done)
		}
	}
}

// checkNoMicroJSON fails if micro's answer reached the event subject
// forged or any status subject, as the world's client sees them.
func checkNoMicroJSON(t *testing.T, w *world, forged string) {
	t.Helper()
	for _, m := range append(w.events.snapshot(), w.status.snapshot()...) {
		if m.Subject == forged || strings.Contains(string(m.Data), `"io.nats.micro.`) {
			t.Errorf("micro's answer was published on %s: %s", m.Subject, truncate(m.Data, 512))
		}
	}
}

// checkOnlySRVViolations fails on a permissions violation in the
// bridge's log other than those for micro's answers to srvHijack.
func checkOnlySRVViolations(t *testing.T, p *bridgeProc, replies []string) {
	t.Helper()
	refused := append(slices.Clone(replies), srvBarrier)
	for _, line := range strings.Split(string(p.log.Bytes()), "\n") {
		if !strings.Contains(strings.ToLower(line), "permissions violation") {
			continue
		}
		if !slices.ContainsFunc(refused, func(r string) bool { return strings.Contains(line, `Publish to \"`+r+`\"`) }) {
			t.Errorf("the bridge hit another permissions violation: %s", line)
		} else if !strings.Contains(line, `"nats_connection":"nats.service"`) {
			t.Errorf("a refused answer of micro's was not the service connection's: %s", line)
		}
	}
}

// TestPermissions_HAUnderTheRecipe runs two bridges with HA as the
// recipe's bridge and bridge-service users: one is active, the other
// stands by. micro's $SRV answers aimed at the lease key, an event
// subject, the status subject and the JetStream API change nothing: the
// active keeps renewing its lease, its events keep going into the stream,
// nothing is forged. After a SIGTERM of the active the other takes over
// and answers, with no permissions violation but micro's refused
// answers: the lease bucket's subjects of the recipe are all HA needs.
func TestPermissions_HAUnderTheRecipe(t *testing.T) {
	t.Parallel()
	w, pass := recipeWorld(t, true, nil)
	p := w.startPBX("ha1", amitest.Config{Profile: amitest.Asterisk22, WriteTimeout: time.Second})
	cfg := w.config(w.serverFor("ha1", p, viaURL))
	cfg.Log.Level = "info"
	cfg.JetStream = &jetStreamConf{Enabled: true}
	cfg.HA = &haConf{Enabled: true}
	cfg.extraEnv = recipeBridgeLogin(t, pass)
	r := &haRig{w: w, pbx: p, cfg: cfg}
	a, b := r.startPair()

	// The lease key, watched as the bridge's user from before the hijack.
	js := recipeBridgeJS(t, w, pass)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := js.KeyValue(ctx, bridge.DefaultHABucket)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := kv.Watch(ctx, "ha1", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	_, before := recipeSubjectCount(t, w, pass, "ami.ha1.event.Hangup")

	const forged = "ami.ha1.event.Hangup"
	srvReplies := []string{"$KV." + bridge.DefaultHABucket + ".ha1", forged, "ami.ha1.status",
		"$JS.API.STREAM.PURGE.AMI_EVENTS", "$JS.API.STREAM.DELETE.AMI_EVENTS"}
	srvHijack(t, w, srvReplies, a.bridgeProc, b.bridgeProc)

	// Every write of the key, before and after the hijack, is the
	// active's own, and it goes on renewing: micro's JSON never got in.
	isActives := func(value []byte, op jetstream.KeyValueOp) {
		t.Helper()
		var rec struct{ Holder string }
		if err := json.Unmarshal(value, &rec); err != nil || rec.Holder != a.self || op != jetstream.KeyValuePut {
			t.Fatalf("the lease key holds %s (%v), not the active %s's lease", truncate(value, 512), op, a.self)
		}
	}
	now, err := kv.Get(ctx, "ha1")
	if err != nil {
		t.Fatalf("the lease key after the hijack: %v", err)
	}
	isActives(now.Value(), now.Operation())
	renewals := 0
	deadline := time.After(readyTimeout)
	for renewals < 2 {
		select {
		case e := <-watch.Updates():
			if e == nil {
				continue
			}
			isActives(e.Value(), e.Operation())
			if e.Revision() > now.Revision() {
				renewals++
			}
		case <-deadline:
			t.Fatalf("the active %s renewed its lease %d times after the hijack, want 2", a.self, renewals)
		}
	}
	// Its events keep going into the stream.
	for i := range 3 {
		p.emit("ItAfterSRV", "Index", strconv.Itoa(i))
	}
	w.events.waitFor(t, 0, eventTimeout, "the events after the hijack", func(m *nats.Msg) bool {
		f, err := parseFields(m.Data)
		return err == nil && f.value("Event") == "ItAfterSRV" && f.value("Index") == "2"
	})
	waitStreamMsgs(t, js, "AMI_EVENTS", before+3, eventTimeout)
	if onForged, _ := recipeSubjectCount(t, w, pass, forged); onForged != 0 {
		t.Errorf("%d messages on %s in the stream, want none", onForged, forged)
	}
	checkNoMicroJSON(t, w, forged)

	a.signal(syscall.SIGTERM)
	if code := a.wait(exitTimeout); code != 0 {
		t.Errorf("the active exited %d after SIGTERM, want 0", code)
	}
	r.waitHA(b, 0, "active", func(s haStatus) bool { return s.Role == "active" && s.LastTakeover != nil })
	wantSuccess(t, w.request("ha1", `{"Action":"Ping"}`))
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	for _, x := range []*haBridge{a, b} {
		checkOnlySRVViolations(t, x.bridgeProc, srvReplies)
	}
}

// TestPermissions_EmbeddedServiceUser runs the bridge on its embedded
// server with nats.user and nats.service from the environment: the
// server knows both users, requests are answered, events flow, and
// micro's $SRV answers aimed at an event subject, the status subject or
// the lease bucket are refused on the service connection.
func TestPermissions_EmbeddedServiceUser(t *testing.T) {
	t.Parallel()
	w := newWorldNoEvents(t, natsOptions{})
	p := w.startPBX("emb", amitest.Config{Profile: amitest.Asterisk22})
	pass := newPasswords("bridge", "bridge-service")
	for _, s := range pass {
		w.addSecret(s)
	}
	listen := deadAddr(t)
	cfg := w.config(w.serverFor("emb", p, viaURL))
	cfg.NATS = natsConfig{Embedded: &embeddedConfig{Listen: listen}}
	cfg.extraEnv = []string{"AMI_BRIDGE_NATS__USER=bridge", "AMI_BRIDGE_NATS__PASSWORD=" + pass["bridge"],
		"AMI_BRIDGE_NATS__SERVICE__USER=bridge-service", "AMI_BRIDGE_NATS__SERVICE__PASSWORD=" + pass["bridge-service"]}
	b := w.startBridge(cfg)
	b.log.waitFor(t, `"message":"ready"`, readyTimeout, b.done)
	if !strings.Contains(string(b.log.Bytes()), `"nats_service_user":true`) {
		t.Error(`the "ready" line does not say that a service connection runs`)
	}
	// An action session logs "connected" once its endpoint has joined.
	b.log.waitFor(t, `"session":"action-1","state":"connected"`, readyTimeout, b.done)

	// A client as the main user, which may do all.
	nc, err := nats.Connect("nats://"+listen, nats.UserInfo("bridge", pass["bridge"]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	seen := subscribeInbox(t, nc, ">")
	m, err := nc.Request("ami.emb.action", []byte(`{"Action":"Ping"}`), replyTimeout)
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if !strings.Contains(string(m.Data), `"Pong"`) {
		t.Fatalf("Ping reply %s", m.Data)
	}
	p.emit("ItEmbedded")
	seen.waitFor(t, 0, eventTimeout, "the event", func(m *nats.Msg) bool { return m.Subject == "ami.emb.event.ItEmbedded" })

	replies := []string{"ami.emb.event.Hangup", "ami.emb.status", "$KV.ami_bridge_leases.emb"}
	for _, reply := range replies {
		if err := nc.PublishMsg(&nats.Msg{Subject: "$SRV.PING", Reply: reply}); err != nil {
			t.Fatal(err)
		}
		b.log.waitFor(t, `Permissions Violation for Publish to \"`+reply+`\"`, replyTimeout, b.done)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, m := range seen.snapshot() {
		if strings.Contains(string(m.Data), `"io.nats.micro.`) && slices.Contains(replies, m.Subject) {
			t.Errorf("micro's answer reached %s: %s", m.Subject, truncate(m.Data, 200))
		}
	}
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	checkOnlySRVViolations(t, b, replies)
}

// recipeWorld is a world whose NATS server has the users of the recipe in
// docs/security.md (change, when not nil, may alter them first), whose own
// client is the operator, and whose secret checks know every password.
func recipeWorld(t *testing.T, jetStream bool, change func([]*server.User)) (*world, map[string]string) {
	t.Helper()
	pass := newPasswords(recipeUserNames...)
	users := recipeUsers(t, pass)
	if change != nil {
		change(users)
	}
	w := newWorld(t, natsOptions{users: users, user: "operator", pass: pass["operator"], inboxPrefix: inboxOf("operator"), jetStream: jetStream})
	for _, n := range recipeUserNames {
		w.addSecret(pass[n])
	}
	return w, pass
}

// recipeBridgeJS is JetStream as the recipe's bridge user, which may look
// the stream and the lease bucket up, unlike the operator; the connection
// closes with the test.
func recipeBridgeJS(t *testing.T, w *world, pass map[string]string) jetstream.JetStream {
	t.Helper()
	bc, err := nats.Connect(w.ns.ClientURL(), nats.UserInfo("bridge", pass["bridge"]), nats.CustomInboxPrefix(subjects.InboxPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bc.Close)
	js, err := jetstream.New(bc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestPermissions_IdempotencyUnderTheRecipe: with JetStream, the bridge
// as the recipe's "bridge" user creates and uses the idempotency bucket;
// the operator's retry with the same key, from the nats CLI, gets the
// first reply and the PBX runs the action once.
func TestPermissions_IdempotencyUnderTheRecipe(t *testing.T) {
	t.Parallel()
	w, pass := recipeWorld(t, true, nil)
	p := w.startPBX("pbx1", amitest.Config{})
	var mu sync.Mutex
	runs := 0
	p.HandleFunc("PlaceCall", func(rw *amitest.ResponseWriter, _ *amitest.Request) {
		mu.Lock()
		runs++
		n := runs
		mu.Unlock()
		rw.Success("Message", "placed", "Execution", strconv.Itoa(n))
	})
	cfg := w.config(w.serverFor("pbx1", p, viaURL))
	cfg.JetStream = &jetStreamConf{Enabled: true}
	cfg.extraEnv = recipeBridgeLogin(t, pass)
	b := w.startBridge(cfg)
	w.waitReady("pbx1")

	first := w.request("pbx1", `{"Action":"PlaceCall"}`, "Ami-Idempotency-Key", "order-42")
	if first.has("error") || first.Response.value("Execution") != "1" {
		t.Fatalf("first request: %s", first)
	}
	out := newCLI(w).run(t, "--user", "operator", "--password", pass["operator"], "--inbox-prefix", inboxOf("operator"),
		"req", "ami.pbx1.action", `{"Action":"PlaceCall"}`, "-H", "Ami-Idempotency-Key:order-42", "--raw")
	if !strings.Contains(out, `"Execution":"1"`) {
		t.Errorf("the retry from the nats CLI got %s", out)
	}
	mu.Lock()
	if runs != 1 {
		t.Errorf("the PBX ran the action %d times, want 1", runs)
	}
	mu.Unlock()
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if out := b.log.Bytes(); strings.Contains(strings.ToLower(string(out)), "permissions violation") {
		t.Errorf("the bridge hit a permissions violation:\n%s", truncate(out, 8192))
	}
}

// runDocSuccesses runs each line of block, a docs/security.md block of
// nats commands (vars filled in), as the CLI c, and fails the test for a
// line that is not a nats command or whose answer is not a success of
// pbx1. It returns how many it ran.
func runDocSuccesses(t *testing.T, c *cli, block string, vars map[string]string) int {
	t.Helper()
	ran := 0
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		words := shellWords(t, line, vars)
		if len(words) == 0 || words[0] != "nats" {
			t.Fatalf("docs/security.md: %q is not a nats command", line)
		}
		out := c.run(t, words[1:]...)
		if !strings.Contains(out, `"server":"pbx1"`) || strings.Contains(out, `"error"`) {
			t.Errorf("%s: the answer is not a success of pbx1:\n%s", line, out)
		}
		ran++
	}
	return ran
}
