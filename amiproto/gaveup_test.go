package amiproto_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// The answers to requests whose callers gave up are swallowed, not
// reported, even when thousands were given up: the set that remembers
// them is bounded without forgetting the recent ones (it once was wiped
// whole at 4,096, and the late answers after the wipe became unmatched).
func TestClient_LateAnswersOfManyGivenUpRequestsAreSwallowed(t *testing.T) {
	const n = 5000
	srv := startPBX(t, amitest.Config{})
	release := make(chan struct{})
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the PBX closes, which waits for the handler
	srv.HandleFunc("Late", func(w *amitest.ResponseWriter, _ *amitest.Request) {
		<-release // the first holds the rest behind it, as Asterisk would
		w.Success("Message", "late")
	})
	var mu sync.Mutex
	var reports []error
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}), amiproto.WithReportFunc(func(err error) {
		mu.Lock()
		reports = append(reports, err)
		mu.Unlock()
	}))
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for range n {
		if _, err := c.Request(gone, amiproto.NewAction("Late")); !errors.Is(err, context.Canceled) {
			t.Fatalf("request with a cancelled context: %v", err)
		}
	}
	letGo()
	// Answers come in order: once the Ping is answered, every late one was
	// read.
	if _, err := c.Request(ctx10s(t), amiproto.NewAction("Ping")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 0 {
		t.Errorf("%d late answers reported, the first: %v", len(reports), reports[0])
	}
}
