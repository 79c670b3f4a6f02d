package integration

import (
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// staleTimeout bounds how long the bridge may take to find out that its
// NATS server fell silent: three of its 5 s pings, and some slack.
const staleTimeout = 30 * time.Second

// TestChaos_NATSServerFallsSilent: the bridge reaches one nats-server by
// two URLs, each through its own link. The link the bridge uses falls
// silent: the connection stays open but no byte passes, as when a server
// loses power or a WAN link drops without a word. The bridge must find
// out by its pings, reconnect by the other URL, and publish again.
func TestChaos_NATSServerFallsSilent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	target := w.ns.Addr().String()
	links := []*wanLink{startWANLink(t, target), startWANLink(t, target)}
	p := w.startPBX("quiet", amitest.Config{Profile: amitest.Asterisk22})
	cfg := w.config(w.serverFor("quiet", p, viaURL))
	cfg.NATS.URL = "nats://" + links[0].addr + ",nats://" + links[1].addr
	b := w.startBridge(cfg)
	w.waitReady("quiet")

	var used *wanLink
	for _, l := range links {
		if l.connections() > 0 {
			used = l
		}
	}
	if used == nil {
		t.Fatal("the bridge's connection goes through neither link")
	}
	used.silence()
	begin := time.Now()
	b.log.waitFor(t, "NATS reconnected", staleTimeout, b.done)
	t.Logf("the bridge reconnected %v after its link fell silent", time.Since(begin).Round(100*time.Millisecond))

	from := w.events.len()
	p.emit("ItAfterSilence")
	w.waitEvent(from, "ami.quiet.event.ItAfterSilence")
}
