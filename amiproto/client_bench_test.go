package amiproto_test

import (
	"context"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// BenchmarkClient_RequestRoundTrip is one Ping at a time against amitest on
// loopback: the latency floor of a request.
func BenchmarkClient_RequestRoundTrip(b *testing.B) {
	srv := startPBX(b, amitest.Config{})
	c := dial(b, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	ctx := context.Background()
	ping := amiproto.NewAction("Ping")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Request(ctx, ping); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClient_RequestPipelined runs Pings from many goroutines at once
// on one connection: what correlation by ActionID costs when many actions
// are in flight.
func BenchmarkClient_RequestPipelined(b *testing.B) {
	srv := startPBX(b, amitest.Config{})
	c := dial(b, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		ping := amiproto.NewAction("Ping")
		for pb.Next() {
			if _, err := c.Request(ctx, ping); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
