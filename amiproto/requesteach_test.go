package amiproto_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// heldList installs action on srv: a list of n entries ("Entry", N: i)
// whose complete event leaves only once letGo is called. written is
// closed when the entries have been handed to the session's writer.
func heldList(t *testing.T, srv *amitest.Server, action string, n int) (written chan struct{}, letGo func()) {
	t.Helper()
	written, release := make(chan struct{}), make(chan struct{})
	letGo = sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the PBX closes, which waits for the handler
	srv.HandleFunc(action, func(w *amitest.ResponseWriter, _ *amitest.Request) {
		id, _ := w.ActionID()
		w.Success("EventList", "start", "Message", "Entries will follow")
		for i := range n {
			w.WriteMessage(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "Entry"}).
				Add("ActionID", id).Add("N", fmt.Sprint(i)))
		}
		w.Flush()
		close(written)
		<-release
		w.WriteMessage(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "EntryComplete"}).
			Add("ActionID", id).Add("EventList", "Complete").Add("ListItems", fmt.Sprint(n)))
	})
	return written, letGo
}

// RequestEach hands the leading response and each entry to its func as
// they are read, before the list is complete, with the caller's ActionID,
// and returns the response and complete event without holding entries.
func TestClient_RequestEachHandsEntriesAsTheyArrive(t *testing.T) {
	const n = 3
	srv := startPBX(t, amitest.Config{})
	_, release := heldList(t, srv, "Listing", n)
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	got := make(chan *amiproto.Message, n+1)
	type result struct {
		resp *amiproto.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.RequestEach(ctx10s(t), amiproto.NewAction("Listing", "ActionID", "mine"), func(m *amiproto.Message) bool {
			got <- m
			return true
		})
		done <- result{resp, err}
	}()
	// Every part arrives while the PBX still holds the complete event.
	for i := range n + 1 {
		m := <-got
		if m.ActionID() != "mine" {
			t.Errorf("part %d has ActionID %q, want the caller's", i, m.ActionID())
		}
		switch {
		case i == 0 && m.Kind() != amiproto.KindResponse:
			t.Fatalf("first part is not the response: %v", m)
		case i > 0 && (m.EventName() != "Entry" || m.Get("N") != fmt.Sprint(i-1)):
			t.Fatalf("part %d: %v", i, m)
		}
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.resp.IsCollection() || r.resp.Complete == nil || len(r.resp.Events) != 0 ||
		r.resp.Complete.Get("ListItems") != fmt.Sprint(n) || r.resp.ActionID() != "mine" || r.resp.Complete.ActionID() != "mine" {
		t.Fatalf("response %v, %d events, complete %v", r.resp.Message, len(r.resp.Events), r.resp.Complete)
	}
	// A response that starts no list comes back whole, without a call.
	resp, err := c.RequestEach(ctx10s(t), amiproto.NewAction("Ping"), func(m *amiproto.Message) bool {
		t.Errorf("each called for a Ping answer: %v", m)
		return true
	})
	if err != nil || resp.Get("Ping") != "Pong" {
		t.Fatalf("Ping: %v %v", resp, err)
	}
}

// When each says stop, RequestEach returns at once, before the list is
// complete; the rest of the list is read and discarded, never reported
// nor delivered as events, and the session goes on.
func TestClient_RequestEachStopsAndTheSessionStaysInStep(t *testing.T) {
	const n, keep = 5000, 10
	srv := startPBX(t, amitest.Config{})
	written, release := heldList(t, srv, "Listing", n)
	var reports atomic.Int64
	var leaked atomic.Int64
	c := dial(t, srv.URL("admin", "s3cret!"),
		amiproto.WithReportFunc(func(error) { reports.Add(1) }),
		amiproto.WithEvents(amiproto.EventDelivery{Func: func(m *amiproto.Message) {
			if name := m.EventName(); name == "Entry" || name == "EntryComplete" {
				leaked.Add(1)
			}
		}}))
	calls := 0
	resp, err := c.RequestEach(ctx10s(t), amiproto.NewAction("Listing"), func(*amiproto.Message) bool {
		calls++
		return calls <= keep // the response, then keep entries
	})
	if err != nil || resp.Complete != nil || !resp.IsCollection() {
		t.Fatalf("stopped list: %v %v", resp, err)
	}
	if calls != keep+1 {
		t.Fatalf("each called %d times, want %d", calls, keep+1)
	}
	<-written
	release()
	// The PBX answers in order: the Pong comes after the whole list.
	for range 3 {
		if _, err := c.Request(ctx10s(t), amiproto.NewAction("Ping")); err != nil {
			t.Fatal(err)
		}
	}
	if calls != keep+1 || reports.Load() != 0 || leaked.Load() != 0 || c.Pending() != 0 {
		t.Fatalf("after the list: each called %d times, %d reports, %d list events leaked, %d pending",
			calls, reports.Load(), leaked.Load(), c.Pending())
	}
}

// A request that ends while each runs, by its context or by Close,
// returns only once each has, and each is not called again.
func TestClient_RequestEachNeverOutlivesItsFunc(t *testing.T) {
	for _, end := range []string{"ctx", "Close"} {
		t.Run(end, func(t *testing.T) {
			srv := startPBX(t, amitest.Config{})
			_, release := heldList(t, srv, "Listing", 100)
			c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			inEach, unblock := make(chan struct{}), make(chan struct{})
			var running, after atomic.Bool
			var calls atomic.Int64
			type result struct {
				resp *amiproto.Response
				err  error
			}
			returned := make(chan result, 1)
			go func() {
				resp, err := c.RequestEach(ctx, amiproto.NewAction("Listing", "ActionID", "mine"), func(*amiproto.Message) bool {
					if after.Load() {
						t.Error("each called after RequestEach returned")
					}
					if calls.Add(1) == 2 {
						running.Store(true)
						close(inEach)
						<-unblock
						running.Store(false)
					}
					return true
				})
				if running.Load() {
					t.Error("RequestEach returned while each was running")
				}
				after.Store(true)
				if resp != nil {
					_ = resp.ActionID() // read what the reader wrote: the race detector checks the hand-over
				}
				returned <- result{resp, err}
			}()
			<-inEach
			if end == "ctx" {
				cancel()
			} else {
				c.Close()
			}
			select {
			case r := <-returned:
				t.Fatalf("returned while each was blocked: %v", r.err)
			case <-time.After(50 * time.Millisecond): // a bound on what must not happen
			}
			close(unblock)
			r := <-returned
			if end == "ctx" {
				if r.err != context.Canceled {
					t.Fatalf("err %v, want context.Canceled", r.err)
				}
				release()
				if _, err := c.Request(ctx10s(t), amiproto.NewAction("Ping")); err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(r.err, amiproto.ErrClosed) {
				t.Fatalf("err %v, want ErrClosed", r.err)
			}
		})
	}
}
