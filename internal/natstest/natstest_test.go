package natstest_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/internal/natstest"
)

// A server started again on its port and store holds what the first one
// stored, as a restarted nats-server does.
func TestStart_AgainOnTheSamePortAndStore(t *testing.T) {
	o := natstest.Options{JetStream: true, StoreDir: t.TempDir()}
	ns := natstest.Start(t, o)
	kv, err := natstest.ConnectJS(t, ns).CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	o.Port = ns.Addr().(*net.TCPAddr).Port
	natstest.Stop(ns)
	natstest.Stop(ns) // a second Stop is harmless, as at cleanup

	ns = natstest.Start(t, o)
	if got := ns.Addr().(*net.TCPAddr).Port; got != o.Port {
		t.Fatalf("port %d, want %d", got, o.Port)
	}
	kv, err = natstest.ConnectJS(t, ns).KeyValue(t.Context(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(t.Context(), "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("after the restart: %v, %v", e, err)
	}
}

func TestInterceptJS_DropsOneAckAndHolds(t *testing.T) {
	ns := natstest.Start(t, natstest.Options{JetStream: true})
	js := &natstest.InterceptJS{JetStream: natstest.ConnectJS(t, ns)}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	// KeyValue.Put publishes through the JetStream it was made from,
	// which is the real one: write as a lease does, through js.
	put := func(v string) error {
		_, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: "$KV.b.k", Data: []byte(v)})
		return err
	}
	js.DropAck.Store(true)
	if err := put("1"); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("write with its ack dropped: %v, want a timeout", err)
	}
	if e, err := kv.Get(t.Context(), "k"); err != nil || string(e.Value()) != "1" {
		t.Fatalf("the write whose ack was dropped is not stored: %v, %v", e, err)
	}
	if err := put("2"); err != nil {
		t.Fatalf("only one ack is dropped: %v", err)
	}

	js.Hold, js.Entered = make(chan struct{}), make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- put("3") }()
	select {
	case <-js.Entered:
	case <-time.After(natstest.ReadyTimeout):
		t.Fatal("the held write never began")
	}
	select {
	case err := <-done:
		t.Fatalf("the write was not held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(js.Hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(t.Context(), "k"); err != nil || string(e.Value()) != "3" {
		t.Fatalf("after the hold: %v, %v", e, err)
	}
}
