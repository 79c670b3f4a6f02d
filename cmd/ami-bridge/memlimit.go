package main

import (
	"cmp"
	"math"
	"runtime/debug"
	"strings"

	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
)

// Where the process's memory limit comes from, for the "ready" line.
const (
	memoryLimitFromEnv    = "GOMEMLIMIT"
	memoryLimitFromConfig = "config"
)

// autoMemoryLimit is memory_limit auto: the soft limit, in bytes, that
// keeps the heap from growing to twice its live size under load (Go's
// default, GOGC=100) without making the garbage collector work harder
// than it must.
//
// The event buffers are the only large live memory the bridge keeps, and
// configuration bounds them: event_buffer_bytes per PBX, with HA or
// without (a standby keeps its events in the same buffer).
// The rest is small and covered by a fixed part: 1 MiB per PBX for its
// sessions (an idle PBX holds about 150 KiB), 40 MiB for the embedded
// server (nats.embedded.max_pending per slow subscriber) and the runtime,
// and 32 MiB more when the embedded server runs JetStream. A limit below
// the live heap would make the collector run without pause, which is why
// the limit grows with the number of PBXes rather than being one figure.
func autoMemoryLimit(cfg *config.Config) int64 {
	const (
		perServer = 1 << 20
		base      = 40 << 20
		jetStream = 32 << 20
	)
	servers := int64(len(cfg.Servers))
	perPBX := int64(cmp.Or(cfg.EventBufferBytes, bridge.DefaultEventBufferBytes)) + perServer // 0 takes the bridge's default
	limit := servers*perPBX + base
	if cfg.NATS.URL == "" && cfg.JetStream.Enabled {
		limit += jetStream
	}
	return limit
}

// applyMemoryLimit sets the Go runtime's soft memory limit from
// cfg.MemoryLimit, and returns the limit the process now runs under
// (math.MaxInt64 for none) and where it comes from: "auto", "config",
// "off", or "GOMEMLIMIT" when environ sets that variable, which the
// runtime applied at start and which then wins.
func applyMemoryLimit(cfg *config.Config, environ []string) (limit int64, source string) {
	if getenv(environ, "GOMEMLIMIT") != "" { // as the runtime reads it
		return debug.SetMemoryLimit(-1), memoryLimitFromEnv
	}
	switch cfg.MemoryLimit {
	case config.MemoryLimitOff:
		return debug.SetMemoryLimit(-1), string(config.MemoryLimitOff)
	case config.MemoryLimitAuto:
		limit, source = autoMemoryLimit(cfg), string(config.MemoryLimitAuto)
	default:
		limit, _ = cfg.MemoryLimit.Bytes() // Load checked it
		source = memoryLimitFromConfig
	}
	debug.SetMemoryLimit(limit)
	return limit, source
}

// logMemoryLimit adds the memory limit to a log line: its bytes, unless
// there is none, and its source.
func logMemoryLimit(ev *zerolog.Event, limit int64, source string) *zerolog.Event {
	if limit != math.MaxInt64 {
		ev = ev.Int64("memory_limit", limit)
	}
	return ev.Str("memory_limit_source", source)
}

// getenv returns the value of the first name=value of environ, as
// os.Getenv does for the process's own environment.
func getenv(environ []string, name string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
