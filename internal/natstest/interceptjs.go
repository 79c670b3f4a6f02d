package natstest

import (
	"context"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// InterceptJS is a JetStream whose PublishMsg (a KV compare-and-set
// write, such as a lease's renewal) a test can hold, or whose ack it can
// drop after the server stored the write.
type InterceptJS struct {
	jetstream.JetStream
	// DropAck: the next write is stored, and its ack reported lost, as
	// when the reply is lost on the way back.
	DropAck atomic.Bool
	// Hold, when non-nil, makes each write send on Entered and then wait
	// until Hold closes or its context ends.
	Hold    chan struct{}
	Entered chan struct{}
}

// PublishMsg publishes m through the wrapped JetStream, held or with its
// ack dropped as the test set.
func (j *InterceptJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if j.Hold != nil {
		j.Entered <- struct{}{}
		select {
		case <-j.Hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && j.DropAck.CompareAndSwap(true, false) {
		return nil, nats.ErrTimeout
	}
	return ack, err
}
