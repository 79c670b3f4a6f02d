package subjects_test

import (
	"fmt"

	"github.com/ami-bridge/ami-bridge/subjects"
)

func ExampleEvent() {
	fmt.Println(subjects.Event("ami", "pbx1", "Newchannel"))
	fmt.Println(subjects.Event("ami", "pbx1", "My.Event"))
	fmt.Println(subjects.AllEvents("ami"))
	// Output:
	// ami.pbx1.event.Newchannel
	// ami.pbx1.event.My%2EEvent
	// ami.*.event.>
}

func ExampleUnescapeToken() {
	name, err := subjects.UnescapeToken("My%2EEvent")
	fmt.Println(name, err)
	// Output: My.Event <nil>
}

func ExampleNamedAction() {
	fmt.Println(subjects.NamedAction("ami", "pbx1", "Originate"))
	fmt.Println(subjects.NamedActions("ami", "*"))
	// Output:
	// ami.pbx1.action.Originate
	// ami.*.action.*
}
