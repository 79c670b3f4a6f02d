package amitest_test

import (
	"context"
	"fmt"
	"log"

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
