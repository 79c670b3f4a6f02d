package amiproto

import (
	"strconv"
	"testing"
)

// BenchmarkActionIDs_Resolve: the cost that RequestExpect adds to every
// event with an ActionID read on a session sharing the map: none while
// nobody waits, one map lookup while Expects wait.
func BenchmarkActionIDs_Resolve(b *testing.B) {
	ev := NewMessage(Field{Key: "Event", Value: "Newchannel"}, Field{Key: "ActionID", Value: "other"})
	for _, waiting := range []int{0, 256} {
		b.Run("waiting="+strconv.Itoa(waiting), func(b *testing.B) {
			ids := NewActionIDs()
			for i := range 4096 {
				ids.put("wire-"+strconv.Itoa(i), "caller")
			}
			for i := range waiting {
				ids.register("wait-"+strconv.Itoa(i), &Expect{ids: ids, event: "OriginateResponse", c: make(chan *Message, 1)})
			}
			b.ReportAllocs()
			for b.Loop() {
				ids.resolve("wire-7", ev)
				ids.resolve("", ev)
			}
		})
	}
}
