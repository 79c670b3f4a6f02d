package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// demoServer is the name of the demo's fake PBX, the <server> token of
// its subjects.
const demoServer = "demo"

// demoOptions are the demo's flags.
type demoOptions struct {
	listen    string
	rate      float64
	profile   string
	summary   bool
	duration  time.Duration
	logLevel  string
	logFormat string
	http      string // --http-listen
	metrics   string // the /metrics URL, once listening
}

// demoCommand runs a fake PBX making calls, the embedded NATS server and
// the bridge between them, and prints what is published until ctx ends or
// --duration passes.
func demoCommand(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	var o demoOptions
	fs := pflag.NewFlagSet("ami-bridge demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", config.DefaultListen, "`host:port` of the embedded NATS server; 127.0.0.1:0 picks a free port")
	fs.Float64Var(&o.rate, "rate", 2, "calls per second the fake PBX makes")
	fs.StringVar(&o.profile, "profile", "22", "Asterisk generation the fake PBX imitates: 22 or 13")
	fs.BoolVar(&o.summary, "summary", false, "print a per-second count by event name instead of one line per event")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long; 0 runs until Ctrl-C")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log `level` on stderr: trace, debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log `format`: auto, json, console")
	fs.StringVar(&o.http, "http-listen", demoHTTPListen, "`host:port` of /metrics, /healthz and /readyz; when the default is taken, a free port")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ami-bridge demo [flags]\n\n"+
			"Runs a fake Asterisk PBX that makes calls, the embedded NATS server and\n"+
			"the bridge between them, and prints what the bridge publishes.\n"+
			"Needs no Asterisk and no NATS.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	var problems []string
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if o.listen != "" {
		if _, err := config.ParseListen(o.listen); err != nil {
			problems = append(problems, "--listen: "+err.Error())
		}
	}
	if _, err := config.HTTPAddr(o.http); err != nil {
		problems = append(problems, "--http-listen: "+err.Error())
	}
	if o.rate <= 0 {
		problems = append(problems, "--rate must be positive")
	}
	if o.profile != "22" && o.profile != "13" {
		problems = append(problems, "--profile must be 22 or 13")
	}
	if o.duration < 0 {
		problems = append(problems, "--duration must not be negative")
	}
	logCfg := config.Log{Level: o.logLevel, Format: o.logFormat}
	if _, err := zerolog.ParseLevel(o.logLevel); err != nil || o.logLevel == "" {
		problems = append(problems, "--log-level must be trace, debug, info, warn or error")
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "ami-bridge demo: %s\n", strings.Join(problems, "; "))
		return exitUsage
	}

	log := newLogger(logCfg, stderr)
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if err := demo(ctx, o, !fs.Changed("http-listen"), environ, stdout, log); err != nil {
		fmt.Fprintf(stderr, "ami-bridge demo: %v\n", err)
		return exitFailed
	}
	return exitOK
}

func demo(ctx context.Context, o demoOptions, anyHTTPPort bool, environ []string, stdout io.Writer, log zerolog.Logger) error {
	cfg := demoConfig()
	ops, err := startDemoOps(o.http, anyHTTPPort, log)
	if err != nil {
		return err
	}
	defer ops.close(log)
	o.metrics = ops.URL() + "/metrics"
	// JetStream for the live state's KV bucket (state.enabled), in a
	// store of the demo's own, removed when it stops.
	store, err := os.MkdirTemp("", "ami-bridge-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(store)
	ns, err := startEmbedded(embeddedOptions{Listen: o.listen, MaxPending: int64(cfg.NATS.Embedded.MaxPending), JetStream: true, StoreDir: store}, log)
	if err != nil {
		if errors.Is(err, ErrAddrInUse) {
			return fmt.Errorf("%w\n  another NATS server may be running there; pick a free port with:\n    ami-bridge demo --listen 127.0.0.1:0", err)
		}
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	natsURL := embeddedURL(ns)

	profile := amitest.Asterisk22
	if o.profile == "13" {
		profile = amitest.Asterisk13
	}
	secret := randomSecret()
	// No Config.Channels: "core show channels" then lists only the calls
	// the feed shows (Local/burst@test…, each up for a second), not
	// standing Local/long@test channels the feed never mentions.
	pbx, err := amitest.Start(amitest.Config{
		Profile: profile,
		Users:   map[string]amitest.User{"bridge": {Secret: secret, Write: true}},
	})
	if err != nil {
		return fmt.Errorf("fake PBX: %w", err)
	}
	defer pbx.Close()

	nc, err := connectNATS(ctx, config.NATS{}, mainLogin(config.NATS{}), 5*time.Second, ns, log)
	if err != nil {
		return err
	}
	defer nc.Close() // after drain, a no-op

	feed := newFeed(stdout, o.summary)
	if err := feed.subscribe(nc.Conn, bridge.DefaultPrefix); err != nil {
		return err
	}
	feed.intro(natsURL, o, profile)

	b, err := bridge.New(nc.Conn, []bridge.ServerConfig{{
		Name: demoServer,
		URL:  pbx.URL("bridge", secret),
	}}, bridgeOptions(cfg, log))
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	var calls *amitest.Calls
	err = serveBridge(ctx, b, []*natsConn{nc}, cfg, environ, log, func(ready *zerolog.Event) {
		ops.attach(b, nc.Conn)
		ready.Str("nats_url", natsURL).Str("pbx", pbx.Addr()).Msg("ready")
		// Calls start once the bridge is logged in, so the feed shows the
		// first call from its first event.
		select {
		case <-feed.connected:
		case <-ctx.Done():
		}
		callsCtx, stopCalls := context.WithCancel(ctx)
		defer stopCalls()
		calls = pbx.StartCalls(callsCtx, o.rate, 0)
		summarized := make(chan struct{})
		go func() { // owned here: waited for below
			defer close(summarized)
			if o.summary {
				feed.summarize(callsCtx)
			}
		}()
		// Beside the short burst calls, calls that last: dials, queue
		// calls, transfers, busy and unanswered ones, one every 2 s, each
		// up for seconds, so that the live state has calls, bridges and
		// a queue to watch (docs/callstate.md). They start a second
		// after the first short call, so that the feed opens with a whole
		// short call (README's sample).
		var mix *amitest.Mix
		select {
		case <-time.After(time.Second):
			mix = pbx.StartMix(callsCtx, amitest.MixSpec{Seed: uint64(time.Now().UnixNano()), Rate: 0.5,
				MaxRing: 3 * time.Second, MaxTalk: 15 * time.Second})
		case <-ctx.Done():
		}
		<-ctx.Done()
		stopCalls()
		_ = calls.Wait() // the context's error: the demo was asked to stop
		if mix != nil {
			_, _ = mix.Wait()
		}
		<-summarized
	})
	if err != nil {
		return err
	}
	n, _, _ := calls.Count()
	feed.outro(n)
	return nil
}

// demoShutdownTimeout bounds the demo's shutdown: its PBX and NATS server
// are in the process, so it is quick.
const demoShutdownTimeout = 5 * time.Second

// demoConfig is what the demo runs, as run would read it: one PBX, the
// embedded server with JetStream for the live state (state.enabled) but
// no event stream, every other key at its default. The
// two commands then share the embedded server's max_pending, the bridge's
// options and the memory limit.
func demoConfig() *config.Config {
	cfg := config.Default()
	cfg.Servers = []config.Server{{Name: demoServer}}
	cfg.ShutdownTimeout = demoShutdownTimeout
	cfg.State.Enabled = true
	return &cfg
}

func randomSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// feed prints what the bridge publishes: a line per event and status, or
// with summary a line per second of counts by event name.
type feed struct {
	summary bool

	connected     chan struct{} // closed at the first "connected" status
	connectedOnce sync.Once

	mu     sync.Mutex // one writer, two subscriptions
	w      io.Writer
	events int
	counts map[string]int // this second's, for the summary
}

func newFeed(w io.Writer, summary bool) *feed {
	return &feed{w: w, summary: summary, counts: map[string]int{}, connected: make(chan struct{})}
}

// subscribe starts the feed. Drain ends it.
func (f *feed) subscribe(nc *nats.Conn, prefix string) error {
	for subj, h := range map[string]nats.MsgHandler{
		subjects.AllEvents(prefix): f.onEvent,
		subjects.AllStatus(prefix): f.onStatus,
	} {
		if _, err := nc.Subscribe(subj, h); err != nil {
			return fmt.Errorf("subscribe %s: %w", subj, err)
		}
	}
	// The subscriptions must be in place before the first event.
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("NATS flush: %w", err)
	}
	return nil
}

func (f *feed) intro(natsURL string, o demoOptions, profile amitest.Profile) {
	server := ""
	if natsURL != "nats://127.0.0.1:4222" {
		server = "-s " + natsURL + " "
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintf(f.w, "ami-bridge demo: a fake Asterisk %s PBX named %q makes calls (%s a second);\n",
		profile.AsteriskVersion(), demoServer, strconv.FormatFloat(o.rate, 'f', -1, 64))
	if natsURL == "in-process" {
		fmt.Fprintf(f.w, "the bridge publishes to an in-process NATS server (no second terminal: --listen is empty).\n\n")
	} else {
		fmt.Fprintf(f.w, "the bridge publishes to the embedded NATS server at %s.\n\n", natsURL)
		fmt.Fprintf(f.w, "Try from a second terminal (go install github.com/nats-io/natscli/nats@v0.5.0):\n")
		events := subjects.ServerEvents(bridge.DefaultPrefix, demoServer)
		action := subjects.Action(bridge.DefaultPrefix, demoServer)
		fmt.Fprintf(f.w, "  nats %ssub '%s'\n", server, events)
		fmt.Fprintf(f.w, "  nats %sreq %s '{\"Action\":\"Ping\"}'\n", server, action)
		fmt.Fprintf(f.w, "  nats %sreq %s '{\"Action\":\"Command\",\"Command\":\"core show channels\"}'\n", server, action)
		fmt.Fprintf(f.w, "  nats %smicro ls\n", server)
		// The live state and the call records (docs/callstate.md).
		fmt.Fprintf(f.w, "  nats %skv watch %s '%s.%s.>'\n", server, bridge.DefaultStateBucket, demoServer, subjects.KindCalls)
		fmt.Fprintf(f.w, "  nats %ssub '%s.%s.call.>'\n\n", server, bridge.DefaultPrefix, demoServer)
	}
	fmt.Fprintf(f.w, "Metrics for Prometheus: %s (health: /healthz, readiness: /readyz)\n\n", o.metrics)
	if f.summary {
		fmt.Fprintf(f.w, "Events per second by name (Ctrl-C stops):\n")
	} else {
		fmt.Fprintf(f.w, "Live feed: time, server, Ami-Seq, event, key fields (Ctrl-C stops):\n")
	}
}

// eventFields are the fields shown on an event's line, when present.
var eventFields = []string{"Channel", "ChannelStateDesc", "Exten", "DestChannel", "DialStatus", "Cause-txt", "Uniqueid"}

func (f *feed) onEvent(m *nats.Msg) {
	name := m.Header.Get(subjects.HeaderEvent)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events++
	if f.summary {
		f.counts[name]++
		return
	}
	var body map[string]json.RawMessage
	_ = json.Unmarshal(m.Data, &body) // a bad body still gets its line
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-6s #%-6s %-18s", feedTime(m.Header.Get(subjects.HeaderTime)),
		m.Header.Get(subjects.HeaderServer), m.Header.Get(subjects.HeaderSeq), name)
	for _, k := range eventFields {
		if v, ok := firstString(body[k]); ok {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	fmt.Fprintln(f.w, strings.TrimRight(b.String(), " "))
}

func (f *feed) onStatus(m *nats.Msg) {
	var st subjects.PBXStatus
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-6s status  %s", feedTime(""), st.Server, st.State)
	if st.Error != "" {
		fmt.Fprintf(&b, " (%s)", st.Error)
	}
	if st.Version != "" {
		fmt.Fprintf(&b, " asterisk=%s", st.Version)
	}
	fmt.Fprintf(&b, " published=%d dropped=%d reconnects=%d", st.EventsPublished, st.EventsDropped, st.Reconnects)
	f.mu.Lock()
	fmt.Fprintln(f.w, b.String())
	f.mu.Unlock()
	if st.State == subjects.StateConnected {
		f.connectedOnce.Do(func() { close(f.connected) })
	}
}

// summarize prints and resets the counts every second until ctx ends.
func (f *feed) summarize(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f.mu.Lock()
			names := make([]string, 0, len(f.counts))
			total := 0
			for n, c := range f.counts {
				names = append(names, n)
				total += c
			}
			sort.Slice(names, func(i, j int) bool {
				ci, cj := f.counts[names[i]], f.counts[names[j]]
				return ci > cj || ci == cj && names[i] < names[j]
			})
			var b strings.Builder
			fmt.Fprintf(&b, "%s %5d events/s", now.Format("15:04:05"), total)
			for _, n := range names {
				fmt.Fprintf(&b, "  %s=%d", n, f.counts[n])
			}
			fmt.Fprintln(f.w, b.String())
			clear(f.counts)
			f.mu.Unlock()
		}
	}
}

func (f *feed) outro(calls int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintf(f.w, "\nstopped: %d calls made, %d events received.\n", calls, f.events)
}

// feedTime formats an Ami-Time header, or now when it is missing, as a
// local wall-clock time.
func feedTime(amiTime string) string {
	t, err := time.Parse(time.RFC3339Nano, amiTime)
	if err != nil {
		t = time.Now()
	}
	return t.Local().Format("15:04:05.000")
}

// firstString returns a JSON string, or the first string of an array (a
// repeated key).
func firstString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var l []string
	if json.Unmarshal(raw, &l) == nil && len(l) > 0 {
		return l[0], true
	}
	return "", false
}
