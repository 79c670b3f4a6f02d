package amiproto

import "strings"

// Response is Asterisk's answer to one Action. For a list action it is a
// Collection: the leading response (embedded), the entry events in order,
// and the completing event ("EventList: Complete").
type Response struct {
	*Message            // the leading response
	Events   []*Message // entry events, Collection only
	Complete *Message   // completing event, Collection only
}

// IsCollection reports whether the response started an event list.
func (r *Response) IsCollection() bool {
	return r != nil && (r.Complete != nil || isListStart(r.Message))
}

// IsError reports whether Asterisk answered "Response: Error".
func (r *Response) IsError() bool {
	return r != nil && r.Message != nil && r.Kind() == KindResponse && strings.EqualFold(r.Name(), "Error")
}

// Value returns the field key of the first of the response's entry
// events that has it, or else of the response itself: the one value an
// action such as Getvar (key "Value") or DBGet ("Val", in a one-entry
// Collection) answers with. It returns "" when no message has the field.
func (r *Response) Value(key string) string {
	if r == nil {
		return ""
	}
	for _, ev := range r.Events {
		if v, ok := ev.Lookup(key); ok {
			return v
		}
	}
	if r.Message == nil {
		return ""
	}
	return r.Get(key)
}
