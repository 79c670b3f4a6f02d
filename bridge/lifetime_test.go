package bridge

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// After Shutdown nothing the Bridge started is left running: every
// session's loop, client, keepalive and service, the publisher and the
// status ticker. Goroutines end a little after they are told to (a
// client's writer, a drained subscription): poll.
func TestBridge_ShutdownLeavesNoGoroutine(t *testing.T) {
	// Without JetStream: its async-publish reply subscription lives with
	// the NATS connection, which the caller owns, and the stream's
	// goroutines are the server's.
	ns := startNATS(t, natsOptions{})
	nc, cc := connect(t, ns), connect(t, ns)
	pbx := startPBX(t, amitest.Config{})
	w := watchStatus(t, cc, "ami", "pbx1")
	sc := fastServer("pbx1", pbx)
	sc.PingInterval = 10 * time.Millisecond
	// The test's first request starts its connection's reply
	// subscription: start it before counting.
	_, _ = cc.Request("warm.up", nil, waitTime)
	baseline := runtime.NumGoroutine()

	b, err := New(nc, []ServerConfig{sc}, Options{StatusInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.waitAllUp()
	waitSessions(t, pbx, perPBX)
	pbx.Emit(userEvent("x", 1))
	request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTime)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Shutdown, %d before Start:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}
