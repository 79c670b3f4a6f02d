package amitest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// Example starts a fake Asterisk 22 with four live channels and lists
// them with the amiproto client.
func Example() {
	srv, err := amitest.Start(amitest.Config{Channels: 4})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	resp, err := c.Request(ctx, amiproto.NewAction("CoreShowChannels"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Banner())
	fmt.Println(len(resp.Events), "channels, ListItems:", resp.Complete.Get("ListItems"))
	fmt.Println(resp.Events[0].Get("Channel"))
	// Output:
	// Asterisk Call Manager/11.0.0
	// 4 channels, ListItems: 4
	// Local/long@test-00000000;1
}

// ExampleServer_PlayCall plays one call and receives its CDR events.
func ExampleServer_PlayCall() {
	srv, err := amitest.Start(amitest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "cdr"}))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	info := srv.PlayCall(amitest.CallSpec{Channel: "Local/demo@test"})
	fmt.Println(info.Events, "events")
	for range 2 {
		ev := <-c.Events()
		fmt.Println(ev.EventName(), ev.Get("Destination"), ev.Get("Disposition"))
	}
	// Output:
	// 22 events
	// Cdr demo ANSWERED
	// Cdr demo ANSWERED
}

// ExampleConfig_legacy shows the Asterisk 13 Command framing, which the
// amiproto reader turns into the same output string as Asterisk 22's.
func ExampleConfig_legacy() {
	srv, err := amitest.Start(amitest.Config{Profile: amitest.Asterisk13})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	resp, err := c.Request(ctx, amiproto.NewAction("Command", "Command", "database get pbx UUID"))
	if err != nil {
		log.Fatal(err)
	}
	out, _ := resp.Output()
	fmt.Println(resp.Name())
	fmt.Println(out)
	// Output:
	// Follows
	// Value: db9323cf-917b-45d3-b3f5-08bde009c360
}

// ExampleServer_PlayScenario lists what the PBX has while a queue call's
// caller talks with the agent (a list answer reflects exactly the events
// before it), then reads the call's Cdrs once it ended.
func ExampleServer_PlayScenario() {
	srv, err := amitest.Start(amitest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "call"}))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	done := make(chan amitest.ScenarioInfo)
	go func() {
		info, err := srv.PlayScenario(ctx, amitest.ScenarioQueue, amitest.Timing{Talk: 10 * time.Millisecond})
		if err != nil {
			log.Fatal(err)
		}
		done <- info
	}()
	for entered := 0; entered < 2; {
		if ev := <-c.Events(); ev.EventName() == "BridgeEnter" {
			entered++
		}
	}
	for _, action := range []string{"CoreShowChannels", "BridgeList"} {
		resp, err := c.Request(ctx, amiproto.NewAction(action))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(action, len(resp.Events))
	}
	info := <-done
	for _, cdr := range srv.Cdrs(info.Linkedid) {
		fmt.Println(cdr.Get("Destination"), cdr.Get("Disposition"))
	}
	// Output:
	// CoreShowChannels 4
	// BridgeList 1
	// agent ANSWERED
	// queue BUSY
	// queue ANSWERED
	// queue ANSWERED
}
