package bridge

import "strings"

// globMatch reports whether name matches pattern, ignoring ASCII case. In a
// pattern '*' matches any run of bytes, empty included, '?' matches exactly
// one byte, and every other byte matches itself. There is no escape and no
// character class: event and action names are plain words, and unlike
// path.Match no pattern is ever malformed.
func globMatch(pattern, name string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			starP, starN = p, n
			p++
		case p < len(pattern) && (pattern[p] == '?' || lower(pattern[p]) == lower(name[n])):
			p++
			n++
		case starP >= 0:
			// Let the last '*' swallow one more byte and retry.
			starN++
			p, n = starP+1, starN
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// globList is a list of patterns; a name matches when any pattern does.
type globList []string

func (l globList) match(name string) bool {
	for _, p := range l {
		if globMatch(p, name) {
			return true
		}
	}
	return false
}

// normalizeGlobs trims the patterns and drops the empty ones, which could
// only match the empty name and are most likely left over from config.
func normalizeGlobs(in []string) globList {
	var out globList
	for _, p := range in {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
