// Package amiproto implements the Asterisk Manager Interface (AMI): the
// message type, a streaming Reader and Writer, and a pipelined Client.
//
// AMI is a line protocol close to MIME headers: a message is a run of
// "Key: value" lines ended by a blank line. Asterisk sends a one-line banner
// ("Asterisk Call Manager/11.0.0"), then Responses to the client's Actions and
// Events. amiproto keeps every field in wire order, keeps repeated keys, and
// reads both framings of Command output: the "Output:" lines of Asterisk 14
// and later, and the "Response: Follows" block of Asterisk 13 and earlier.
//
// The vocabulary follows clue/reactphp-ami: a Client sends an Action and gets
// a Response, which is a Collection when Asterisk answers with an event list;
// everything else Asterisk sends is an Event.
package amiproto
