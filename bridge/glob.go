package bridge

import "strings"

// The glob syntax of events.include/exclude and actions.allow/deny, the
// only one in the project (Check validates it, with checkGlob):
//
//   - '*' matches any run of bytes, the empty one included;
//   - '?' matches exactly one byte;
//   - '[...]' matches one byte of the set: single bytes and ranges such as
//     a-z; a leading '!' or '^' negates it;
//   - every other byte, '\' included, matches itself.
//
// Matching ignores ASCII case, literals and classes alike ([a-z] matches
// "Q" too), as Asterisk matches action names. There are no path
// semantics: '*' crosses '/' and '.'.

// globMatch reports whether name matches pattern. A malformed pattern
// (see checkGlob) never matches.
func globMatch(pattern, name string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) && pattern[p] == '*' {
			starP, starN = p, n
			p++
			continue
		}
		if p < len(pattern) {
			ok, width, valid := matchOne(pattern[p:], name[n])
			if !valid {
				return false
			}
			if ok {
				p += width
				n++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' swallow one more byte and retry.
		starN++
		p, n = starP+1, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchOne matches c against the single-byte element at the start of
// pattern ('?', a class or a literal; never '*'). It returns whether c
// matches, the element's width in the pattern, and false for valid when
// the element is a malformed class.
func matchOne(pattern string, c byte) (ok bool, width int, valid bool) {
	switch pattern[0] {
	case '?':
		return true, 1, true
	case '[':
		return matchClass(pattern, c)
	}
	return lower(pattern[0]) == lower(c), 1, true
}

// matchClass matches c against the class at the start of pattern, which
// begins with '['.
func matchClass(pattern string, c byte) (ok bool, width int, valid bool) {
	end := strings.IndexByte(pattern[1:], ']') + 1
	if end <= 0 {
		return false, 0, false
	}
	set := pattern[1:end]
	negated := len(set) > 0 && (set[0] == '!' || set[0] == '^')
	if negated {
		set = set[1:]
	}
	if set == "" {
		return false, 0, false
	}
	lc, uc := lower(c), upper(c)
	in := false
	for i := 0; i < len(set); i++ {
		lo, hi := set[i], set[i]
		if i+2 < len(set) && set[i+1] == '-' {
			hi = set[i+2]
			i += 2
			if lo > hi {
				return false, 0, false
			}
		}
		if lo <= lc && lc <= hi || lo <= uc && uc <= hi {
			in = true
		}
	}
	return in != negated, end + 1, true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
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
