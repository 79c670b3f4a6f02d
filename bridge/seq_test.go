package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Several thousand events go from the AMI reader's side (accept) through
// the publisher to a NATS subscriber. With room enough, Ami-Seq has no gap;
// with a buffer too small for the producer, the numbers missing from what
// was published are exactly the events_dropped count.
func TestSeq_NoGapAndGapsEqualDrops(t *testing.T) {
	const n = 5000
	for _, tc := range []struct {
		name   string
		buffer int
		drops  bool
	}{
		{"room for all", n, false},
		{"forced drops", 8, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := startNATS(t, natsOptions{})
			nc, cc := connect(t, ns), connect(t, ns)
			sub := eventSub(t, cc, "ami")
			b := unstarted(t, nc, Options{EventBuffer: tc.buffer})
			p := b.pbxes[0]
			done := make(chan struct{})
			start := func() {
				go func() { // what pbx.run does for its publisher
					defer close(done)
					p.pub.loop()
				}()
			}
			if !tc.drops {
				start()
			}
			for i := 1; i <= n; i++ {
				if tc.drops && i == n/2 {
					// The reader waits a little for room (roomWait), so
					// only a publisher that is not there yet forces drops;
					// from here on it runs with them.
					start()
				}
				p.accept(userEvent("seq", i))
			}
			p.ring.close()
			<-done
			published, dropped := p.published.Load(), p.dropped.Load()
			if published+dropped != n || p.lastSeq.Load() != n {
				t.Fatalf("published %d + dropped %d, last seq %d; want %d", published, dropped, p.lastSeq.Load(), n)
			}
			if tc.drops != (dropped > 0) {
				t.Fatalf("dropped %d", dropped)
			}
			var last, missing uint64
			for range published {
				m, err := sub.NextMsg(waitTime)
				if err != nil {
					t.Fatal(err)
				}
				seq := seqOf(t, m)
				if seq <= last {
					t.Fatalf("Ami-Seq %d after %d", seq, last)
				}
				missing += seq - last - 1
				last = seq
			}
			missing += n - last
			if missing != dropped {
				t.Errorf("%d Ami-Seq numbers missing, events_dropped %d", missing, dropped)
			}
		})
	}
}

// A refused login jumps the backoff to its maximum: retrying a wrong
// secret fast only fills Asterisk's security log.
func TestLink_RefusedLoginWaitsTheMaximumBackoff(t *testing.T) {
	pbx := startPBX(t, amitest.Config{})
	logins := make(chan time.Time, 16)
	pbx.HandleFunc("Login", func(w *amitest.ResponseWriter, _ *amitest.Request) {
		select {
		case logins <- time.Now():
		default:
		}
		w.Error("Authentication failed")
		w.CloseAfter()
	})
	const max = 200 * time.Millisecond
	l := &link{
		role:    subjects.RoleEvents,
		ep:      pbx.Endpoint("admin", "wrong"),
		min:     time.Millisecond,
		max:     max,
		log:     slog.New(slog.DiscardHandler),
		changed: func() {},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, func(context.Context, *amiproto.Client) { t.Error("a refused login was served") })
	}()
	defer func() { cancel(); <-done }()
	login := func() time.Time {
		select {
		case at := <-logins:
			return at
		case <-time.After(waitTime):
			t.Fatal("no login attempt")
			return time.Time{}
		}
	}
	first, second := login(), login()
	if gap := second.Sub(first); gap < max*3/4 {
		t.Errorf("second login %v after a refused one, want about the max backoff %v", gap, max)
	}
	if st := l.status(); st.State != subjects.StateAuthFailed && st.State != subjects.StateConnecting {
		t.Errorf("state %q", st.State)
	}
}

// seqOf returns the Ami-Seq of an event message.
func seqOf(t testing.TB, m *nats.Msg) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(m.Header.Get(subjects.HeaderSeq), 10, 64)
	if err != nil {
		t.Fatalf("Ami-Seq %q: %v", m.Header.Get(subjects.HeaderSeq), err)
	}
	return n
}
