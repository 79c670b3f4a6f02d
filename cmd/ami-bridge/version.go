package main

import (
	"runtime/debug"
	"strings"

	"github.com/ami-bridge/ami-bridge/bridge"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version string

// versionString returns the build's version: the -ldflags value, else the
// module version recorded by "go install module@version", else "dev".
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// serviceVersion returns v as the semantic version the micro service
// needs, since nats.go micro refuses anything else: "v1.2.3" gives
// "1.2.3" and "dev" gives "0.0.0-dev".
func serviceVersion(v string) string {
	s := strings.TrimPrefix(v, "v")
	if bridge.SemVer(s) {
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
