package amiproto_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// pbx starts a fake Asterisk 22 for the examples; with a real one, dial
// "admin:secret@pbx.example.com" instead.
func pbx(cfg amitest.Config) *amitest.Server {
	srv, err := amitest.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	return srv
}

func ExampleDial() {
	srv := pbx(amitest.Config{})
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"), amiproto.WithMD5Auth())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(c.Banner())
	fmt.Println(amiproto.BannerVersion(c.Banner()))
	// Output:
	// Asterisk Call Manager/11.0.0
	// 11.0.0
}

func ExampleClient_Request() {
	srv := pbx(amitest.Config{})
	defer srv.Close()
	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	resp, err := c.Request(ctx, amiproto.NewAction("Ping", "ActionID", "my-ping"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Name(), resp.Get("Ping"), resp.ActionID())
	// Output: Success Pong my-ping
}

func ExampleClient_Request_collection() {
	srv := pbx(amitest.Config{Channels: 4})
	defer srv.Close()
	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	resp, err := c.Request(ctx, amiproto.NewAction("CoreShowChannels"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Get("Message"))
	for _, ev := range resp.Events {
		fmt.Println(ev.EventName(), ev.Get("ChannelStateDesc"))
	}
	fmt.Println(resp.Complete.EventName(), resp.Complete.Get("ListItems"))
	// Output:
	// Channels will follow
	// CoreShowChannel Up
	// CoreShowChannel Up
	// CoreShowChannel Up
	// CoreShowChannel Up
	// CoreShowChannelsComplete 4
}

// RequestEach handles a list entry by entry as it is read, holding none,
// and may stop it: here after 2 entries of 5; the client discards the
// rest and the session goes on.
func ExampleClient_RequestEach() {
	srv := pbx(amitest.Config{Channels: 5})
	defer srv.Close()
	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	entries := 0
	resp, err := c.RequestEach(ctx, amiproto.NewAction("CoreShowChannels"), func(m *amiproto.Message) bool {
		if m.Kind() == amiproto.KindResponse {
			fmt.Println(m.Get("Message"))
			return true
		}
		entries++
		fmt.Println(m.EventName(), m.Get("ChannelStateDesc"))
		return entries < 2
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("complete:", resp.Complete != nil)
	pong, err := c.Request(ctx, amiproto.NewAction("Ping"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pong.Get("Ping"))
	// Output:
	// Channels will follow
	// CoreShowChannel Up
	// CoreShowChannel Up
	// complete: false
	// Pong
}

func ExampleClient_Command() {
	// Asterisk 13 answers Command with the legacy "Response: Follows"
	// block; Asterisk 14 and later with "Output:" lines. Command reads both.
	for _, profile := range []amitest.Profile{amitest.Asterisk22, amitest.Asterisk13} {
		srv := pbx(amitest.Config{Profile: profile})
		ctx := context.Background()
		c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"))
		if err != nil {
			log.Fatal(err)
		}
		out, err := c.Command(ctx, "core show version")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(out[:len("Asterisk 22.10.1")])
		c.Close()
		srv.Close()
	}
	// Output:
	// Asterisk 22.10.1
	// Asterisk 13.38.3
}

func ExampleClient_Events() {
	srv := pbx(amitest.Config{})
	defer srv.Close()
	ctx := context.Background()
	c, err := amiproto.Dial(ctx, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "call"}))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	srv.PlayCall(amitest.CallSpec{})
	for ev := range c.Events() {
		fmt.Println(ev.EventName(), ev.Get("Channel"))
		if ev.EventName() == "Newchannel" {
			break
		}
	}
	// Output: Newchannel Local/burst@test-00000000;1
}

// loggedIn starts a fake Asterisk and logs in to it with events off.
func loggedIn(cfg amitest.Config) (*amitest.Server, *amiproto.Client) {
	srv := pbx(cfg)
	c, err := amiproto.Dial(context.Background(), srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	if err != nil {
		log.Fatal(err)
	}
	return srv, c
}

// Each action with parameters is a struct, so its fields cannot be swapped
// by mistake; Do sends it.
func ExampleStatus() {
	srv, c := loggedIn(amitest.Config{Channels: 2})
	defer srv.Close()
	defer c.Close()
	ctx := context.Background()

	resp, err := c.Do(ctx, amiproto.Status{Channel: "Local/long@test-00000000;1", Variables: "FOO"})
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range resp.Events {
		fmt.Println(ev.Get("Channel"), ev.Get("ChannelStateDesc"), ev.Get("Variable"))
	}
	// Output: Local/long@test-00000000;1 Up FOO=long0
}

// A struct's Action method builds the Message, for Request or for code
// that sends actions its own way.
func ExampleHangup() {
	srv, c := loggedIn(amitest.Config{Channels: 2})
	defer srv.Close()
	defer c.Close()
	ctx := context.Background()

	hangup := amiproto.Hangup{Channel: "Local/long@test-00000000;1", Cause: 16}
	wire, _ := amiproto.AppendMessage(nil, hangup.Action())
	fmt.Print(strings.ReplaceAll(string(wire), "\r\n", "\n"))
	resp, err := c.Request(ctx, hangup.Action())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Get("Message"))
	_, err = c.Do(ctx, hangup) // the same again: the channel is gone
	fmt.Println(err)
	// Output:
	// Action: Hangup
	// Channel: Local/long@test-00000000;1
	// Cause: 16
	//
	// Channel Hungup
	// ami: Hangup: No such channel
}
