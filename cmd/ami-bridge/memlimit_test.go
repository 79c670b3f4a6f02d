package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
)

const mib = 1 << 20

// servers returns a default configuration with n PBXes.
func servers(n int) *config.Config {
	cfg := config.Default()
	cfg.Servers = make([]config.Server, n)
	return &cfg
}

func TestAutoMemoryLimit(t *testing.T) {
	haJS := func(n int, external bool) *config.Config {
		cfg := servers(n)
		cfg.JetStream.Enabled, cfg.HA.Enabled = true, true
		if external {
			cfg.NATS.URL = "nats://h"
		}
		return cfg
	}
	smallBuffers := servers(2)
	smallBuffers.EventBufferBytes = 4 * mib
	externalJS := servers(1)
	externalJS.NATS.URL, externalJS.JetStream.Enabled = "nats://h", true
	embeddedJS := servers(1)
	embeddedJS.JetStream.Enabled = true

	tests := []struct {
		name string
		cfg  *config.Config
		want int64
	}{
		// buffers + 1 MiB per PBX + 40 MiB (+ 32 MiB for embedded JetStream)
		{"one PBX", servers(1), 32*mib + 1*mib + 40*mib},
		{"smaller buffers", smallBuffers, 2*(4*mib+1*mib) + 40*mib},
		{"JetStream on an external server", externalJS, 32*mib + 1*mib + 40*mib},
		{"JetStream on the embedded server", embeddedJS, 32*mib + 1*mib + 40*mib + 32*mib},
		// A standby keeps its events in the same buffer: HA adds nothing.
		{"3 PBXes, HA, external", haJS(3, true), 3*(32*mib+1*mib) + 40*mib},
		{"3 PBXes, HA, embedded", haJS(3, false), 3*(32*mib+1*mib) + 40*mib + 32*mib},
	}
	for _, tt := range tests {
		if got := autoMemoryLimit(tt.cfg); got != tt.want {
			t.Errorf("%s: %d bytes (%.1f MiB), want %d (%.1f MiB)", tt.name, got, float64(got)/mib, tt.want, float64(tt.want)/mib)
		}
	}
}

// TestApplyMemoryLimit: applyMemoryLimit sets the runtime's limit from
// memory_limit, unless the environment sets GOMEMLIMIT, and says what the
// process runs under.
func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const before = 999 * mib // what the runtime has before each case

	sized := func(m config.MemoryLimit) *config.Config {
		cfg := servers(1)
		cfg.MemoryLimit = m
		return cfg
	}
	tests := []struct {
		name    string
		cfg     *config.Config
		environ []string
		want    int64 // the runtime's limit afterwards, and the one returned; before: untouched
		wantSrc string
	}{
		{"auto", sized("auto"), nil, 73 * mib, "auto"},
		{"a size", sized("256MiB"), []string{"PATH=/bin"}, 256 * mib, "config"},
		{"decimal", sized("512MB"), nil, 512e6, "config"},
		{"off", sized("off"), nil, before, "off"},
		{"GOMEMLIMIT wins over a size", sized("256MiB"), []string{"GOMEMLIMIT=100MiB"}, before, "GOMEMLIMIT"},
		{"GOMEMLIMIT wins over auto", sized("auto"), []string{"GOMEMLIMIT=off"}, before, "GOMEMLIMIT"},
		{"empty GOMEMLIMIT is unset", sized("auto"), []string{"GOMEMLIMIT="}, 73 * mib, "auto"},
	}
	for _, tt := range tests {
		debug.SetMemoryLimit(before)
		limit, src := applyMemoryLimit(tt.cfg, tt.environ)
		now := debug.SetMemoryLimit(-1)
		if limit != tt.want || src != tt.wantSrc || now != tt.want {
			t.Errorf("%s: applyMemoryLimit = %d, %q; runtime limit %d; want %d, %q", tt.name, limit, src, now, tt.want, tt.wantSrc)
		}
	}
}

// TestLogMemoryLimit: no limit logs its source alone, not MaxInt64.
func TestLogMemoryLimit(t *testing.T) {
	logs := newOutput()
	log := zerolog.New(logs)
	logMemoryLimit(log.Info(), 73*mib, "auto").Msg("a")
	logMemoryLimit(log.Info(), math.MaxInt64, "off").Msg("b")
	want := `{"level":"info","memory_limit":76546048,"memory_limit_source":"auto","message":"a"}` + "\n" +
		`{"level":"info","memory_limit_source":"off","message":"b"}` + "\n"
	if got := logs.String(); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}
