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
