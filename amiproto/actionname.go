package amiproto

// ValidActionName reports whether name is spelled as Asterisk's action
// names are: a letter, then letters, digits and '_' (^[A-Za-z][A-Za-z0-9_]*$;
// every action Asterisk 22 registers is). Asterisk skips the bytes below
// 0x21 at the start of a header value and looks actions up ignoring case,
// so a name with blanks or control bytes would reach an action under a
// spelling that a check on the name never saw: a gateway that checks action
// names lets only these through, and compares them ignoring ASCII case.
func ValidActionName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case i > 0 && ('0' <= c && c <= '9' || c == '_'):
		default:
			return false
		}
	}
	return true
}
