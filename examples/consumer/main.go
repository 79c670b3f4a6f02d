// Command consumer is the Go side of the JetStream recipe of docs/jetstream.md. It
// reads the events of one PBX from the bridge's stream with a durable
// consumer, so that a restart goes on where it stopped, and runs an AMI
// action by NATS request-reply, decoding the reply.
//
//	go run ./examples/consumer --server nats://127.0.0.1:4222 --pbx pbx1 --count 10
//
// The bridge must run with jetstream.enabled: true (stream AMI_EVENTS).
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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/subjects"
)

func main() {
	server := flag.String("server", nats.DefaultURL, "NATS server URL")
	pbx := flag.String("pbx", "pbx1", "server name of the PBX in the bridge's config")
	count := flag.Int("count", 10, "events to read")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	nc, err := nats.Connect(*server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	defer nc.Close()
	if err := run(ctx, nc, config{Prefix: "ami", Stream: "AMI_EVENTS", Durable: "analytics", PBX: *pbx, Count: *count}, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

// config says what run reads and from where.
type config struct {
	Prefix  string // the bridge's nats.prefix
	Stream  string // the bridge's jetstream.stream
	Durable string // the consumer's name, kept by the server across restarts
	PBX     string // the server name of the PBX
	Count   int    // events to read
}

// run prints cfg.Count events of the PBX, acknowledging each, then the
// PBX's CoreStatus.
func run(ctx context.Context, nc *nats.Conn, cfg config, out io.Writer) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		FilterSubject: subjects.ServerEvents(cfg.Prefix, cfg.PBX),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	for n := 0; n < cfg.Count; {
		batch, err := cons.Fetch(cfg.Count-n, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		for msg := range batch.Messages() {
			var fields map[string]any
			if err := json.Unmarshal(msg.Data(), &fields); err != nil {
				return fmt.Errorf("event %s: %w", msg.Subject(), err)
			}
			h := msg.Headers()
			fmt.Fprintf(out, "%s #%s %s (%d fields)\n", h.Get(subjects.HeaderServer), h.Get(subjects.HeaderSeq), h.Get(subjects.HeaderEvent), len(fields))
			if err := msg.Ack(); err != nil {
				return err
			}
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}

	// An action: the ActionID comes back in the reply (and in any event
	// the action causes, such as an async OriginateResponse).
	req := nats.NewMsg(subjects.Action(cfg.Prefix, cfg.PBX))
	req.Data = []byte(`{"Action":"CoreStatus","ActionID":"consumer-1"}`)
	req.Header.Set(subjects.HeaderTimeout, "5s")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := nc.RequestMsgWithContext(ctx, req)
	if err != nil {
		return fmt.Errorf("CoreStatus: %w", err)
	}
	var r subjects.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("CoreStatus reply: %w", err)
	}
	if r.Error != nil { // also in the subjects.HeaderErrorCode header
		return fmt.Errorf("CoreStatus: %d %s", r.Error.Code, r.Error.Message)
	}
	var resp map[string]any
	if err := json.Unmarshal(r.Response, &resp); err != nil {
		return fmt.Errorf("CoreStatus response: %w", err)
	}
	fmt.Fprintf(out, "%s CoreStatus: %v, ActionID %v, %v current calls\n",
		r.Server, resp["Response"], resp["ActionID"], resp["CoreCurrentCalls"])
	return nil
}
