// Command activecalls prints the calls in progress on one PBX, live,
// from the bridge's state bucket (docs/callstate.md): the value of each
// <pbx>.calls.<Linkedid> key, and how many calls each queue holds. With
// --watch it then prints each call that starts, changes or ends, until
// Ctrl-C.
//
//	go run ./examples/activecalls --server nats://127.0.0.1:4222 --pbx pbx1 --watch
//
// The bridge must run with state.enabled: true. The values are read as
// JSON into the program's own types, as a consumer in any language
// would: it imports nothing of the bridge.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	server := flag.String("server", nats.DefaultURL, "NATS server URL")
	pbx := flag.String("pbx", "pbx1", "server name of the PBX in the bridge's config")
	bucket := flag.String("bucket", "AMI_STATE", "the bridge's state.bucket")
	watch := flag.Bool("watch", false, "after the calls in progress, print each change until Ctrl-C")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	nc, err := nats.Connect(*server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "activecalls:", err)
		os.Exit(1)
	}
	defer nc.Close()
	if err := run(ctx, nc, config{Bucket: *bucket, PBX: *pbx, Watch: *watch}, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "activecalls:", err)
		os.Exit(1)
	}
}

// config says what run reads.
type config struct {
	Bucket string // the bridge's state.bucket
	PBX    string // the server name of the PBX
	Watch  bool   // go on printing changes until ctx ends
}

// call is what this program reads of a call record (docs/callstate.md,
// "The call record").
type call struct {
	Linkedid string    `json:"linkedid"`
	Start    time.Time `json:"start"`
	Answer   time.Time `json:"answer"`
	Caller   struct {
		Number  string `json:"number"`
		Name    string `json:"name"`
		Channel string `json:"channel"`
	} `json:"caller"`
	Channels []string `json:"channels"`
	Queue    *struct {
		Name string `json:"name"`
	} `json:"queue"`
}

func (c *call) line() string {
	state := "ringing"
	if !c.Answer.IsZero() {
		state = "answered"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  since %s  %s  caller %s", c.Linkedid, c.Start.Local().Format("15:04:05"), state, orNone(c.Caller.Number))
	if c.Caller.Name != "" {
		fmt.Fprintf(&b, " (%s)", c.Caller.Name)
	}
	fmt.Fprintf(&b, "  channels %d", len(c.Channels))
	if c.Queue != nil && c.Queue.Name != "" {
		fmt.Fprintf(&b, "  queue %s", c.Queue.Name)
	}
	return b.String()
}

// unescape reverses the escaping of a key token: =XX is the byte of
// hex XX, a lone = the empty string.
func unescape(tok string) string {
	if tok == "=" {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		if tok[i] == '=' && i+2 < len(tok) {
			if v, err := strconv.ParseUint(tok[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(tok[i])
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// run prints the PBX's calls in progress and the count per queue; with
// Watch, then every change until ctx ends. A KV watch gives the current
// value of each key, then a nil entry, then the changes as they come.
func run(ctx context.Context, nc *nats.Conn, cfg config, out io.Writer) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return fmt.Errorf("state bucket %s (is the bridge's state.enabled on?): %w", cfg.Bucket, err)
	}
	// Deletes too: after the snapshot they are the calls that end.
	w, err := kv.Watch(ctx, cfg.PBX+".calls.>")
	if err != nil {
		return err
	}
	defer w.Stop()
	calls := map[string]*call{} // by key
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			if cfg.Watch && errors.Is(ctx.Err(), context.Canceled) {
				return nil // Ctrl-C
			}
			return ctx.Err()
		case v, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch ended")
			}
			e = v
		}
		if e == nil { // every current value is in: the snapshot
			printSnapshot(out, cfg.PBX, calls)
			if !cfg.Watch {
				return nil
			}
			calls = nil // from now on, each change is printed as it comes
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			if calls == nil {
				fmt.Fprintf(out, "ended   %s\n", unescape(strings.TrimPrefix(e.Key(), cfg.PBX+".calls.")))
			} else {
				delete(calls, e.Key())
			}
			continue
		}
		var c call
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			fmt.Fprintf(out, "%s: not a call record: %v\n", e.Key(), err)
			continue
		}
		if calls == nil {
			fmt.Fprintf(out, "call    %s\n", c.line())
		} else {
			calls[e.Key()] = &c
		}
	}
}

func printSnapshot(out io.Writer, pbx string, calls map[string]*call) {
	fmt.Fprintf(out, "%s: %d calls in progress\n", pbx, len(calls))
	list := make([]*call, 0, len(calls))
	perQueue := map[string]int{}
	for _, c := range calls {
		list = append(list, c)
		if c.Queue != nil && c.Queue.Name != "" {
			perQueue[c.Queue.Name]++
		}
	}
	slices.SortFunc(list, func(a, b *call) int {
		if d := a.Start.Compare(b.Start); d != 0 {
			return d
		}
		return strings.Compare(a.Linkedid, b.Linkedid)
	})
	for _, c := range list {
		fmt.Fprintf(out, "  %s\n", c.line())
	}
	if len(perQueue) > 0 {
		queues := make([]string, 0, len(perQueue))
		for q := range perQueue {
			queues = append(queues, q)
		}
		slices.Sort(queues)
		var b strings.Builder
		for _, q := range queues {
			fmt.Fprintf(&b, " %s=%d", q, perQueue[q])
		}
		fmt.Fprintf(out, "per queue:%s\n", b.String())
	}
}
