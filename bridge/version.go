package bridge

import (
	"regexp"
	"strings"
)

var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$`)

// semVer reports whether v is a semantic version ("1.2.3", "0.0.0-dev"),
// with no leading "v": what nats.go micro takes as a service version.
func semVer(v string) bool { return semverRE.MatchString(v) }

// serviceVersion returns Options.Version as the semantic version the
// micro service needs, since nats.go micro refuses anything else:
// "v1.2.3" gives "1.2.3", "dev" gives "0.0.0-dev" and "" gives "0.0.0".
func serviceVersion(v string) string {
	s := strings.TrimPrefix(v, "v")
	if semVer(s) {
		return s
	}
	var b strings.Builder
	for _, r := range v {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	pre := strings.Trim(b.String(), ".-")
	if pre == "" {
		return "0.0.0"
	}
	return "0.0.0-" + pre
}
