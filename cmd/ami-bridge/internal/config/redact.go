package config

import "strings"

// RedactURL masks the secret of an AMI URL ("user:secret@host") for logs
// and errors, keeping the user. It works on malformed URLs too, since
// those are the ones that end up in error messages.
func RedactURL(raw string) string { return redactUserinfo(raw, false) }

// RedactNATSURL masks the passwords of a comma-separated NATS URL list. A
// user with no password is a token to nats.go, so it is masked whole.
func RedactNATSURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, u := range parts {
		parts[i] = redactUserinfo(u, true)
	}
	return strings.Join(parts, ",")
}

// redactUserinfo masks what follows the first ':' of the userinfo, or the
// whole userinfo when it has no ':' and bareIsSecret is set.
func redactUserinfo(raw string, bareIsSecret bool) string {
	start, at, ok := userinfoBounds(raw)
	if !ok {
		return raw
	}
	user, _, hasSecret := strings.Cut(raw[start:at], ":")
	switch {
	case hasSecret:
		return raw[:start] + user + ":" + redacted + raw[at:]
	case bareIsSecret:
		return raw[:start] + redacted + raw[at:]
	}
	return raw
}

// userinfoSecret returns the secret part of raw's userinfo, "" if none.
func userinfoSecret(raw string, bareIsSecret bool) string {
	start, at, ok := userinfoBounds(raw)
	if !ok {
		return ""
	}
	user, secret, hasSecret := strings.Cut(raw[start:at], ":")
	switch {
	case hasSecret:
		return secret
	case bareIsSecret:
		return user
	}
	return ""
}

// userinfoBounds finds the userinfo of raw as raw[start:at]: after the
// scheme, before the last '@' (a secret may itself hold '@' or '/').
func userinfoBounds(raw string) (start, at int, ok bool) {
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
	}
	at = strings.LastIndexByte(raw, '@')
	if at < start {
		return 0, 0, false
	}
	return start, at, true
}
