package bridge

import "regexp"

var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$`)

// SemVer reports whether v is a semantic version ("1.2.3", "0.0.0-dev"),
// with no leading "v": what nats.go micro takes as a service version.
// Options.Version that is not one registers as "0.0.0", the raw string in
// the service metadata.
func SemVer(v string) bool { return semverRE.MatchString(v) }
