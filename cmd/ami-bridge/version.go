package main

import (
	"runtime/debug"
)

// version is set by a release build, which has no module version to
// embed when built from a source tree without VCS information (the
// Dockerfile's build, say):
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/ami-bridge
var version string

// versionString returns the build's version: see versionFrom.
func versionString() string {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(version, bi)
}

// versionFrom returns the -ldflags version when set; else the main
// module's version, which "go install module@v1.2.3" records as v1.2.3 and
// "go build" in a git checkout as its tag or a pseudo-version (Go 1.24+);
// else the VCS revision the build recorded; else "dev".
func versionFrom(ldflags string, bi *debug.BuildInfo) string {
	if ldflags != "" {
		return ldflags
	}
	if bi == nil {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			rev = s.Value[:12]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev != "" {
		return "dev-" + rev + dirty
	}
	return "dev"
}
