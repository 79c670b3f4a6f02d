package config

import (
	"slices"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1048576", 1 << 20},
		{"100B", 100},
		{"4KiB", 4 << 10},
		{"256MiB", 256 << 20},
		{"1GiB", 1 << 30},
		{"2KB", 2000},
		{"512MB", 512e6},
		{"3GB", 3e9},
		{"8589934591GiB", 8589934591 << 30}, // the largest that fits
	}
	for _, tt := range good {
		if got, err := parseSize(tt.in); err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "+5", "1.5GiB", "256 MiB", "256mib", "256M", "256TiB", "1e6", "0x10", "auto", "8589934592GiB", "99999999999999999999"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestLoad_MemoryLimit: auto by default; auto, off and sizes from the
// file (also as a YAML number, and "off", which YAML 1.1 would read as
// false) and from AMI_BRIDGE_MEMORY_LIMIT; a problem naming the key for
// anything else.
func TestLoad_MemoryLimit(t *testing.T) {
	if got := mustLoad(t, onePBX, nil).MemoryLimit; got != MemoryLimitAuto {
		t.Errorf("default memory_limit = %q, want auto", got)
	}
	tests := []struct {
		yaml  string
		env   string
		want  MemoryLimit
		bytes int64
	}{
		{yaml: "memory_limit: auto", want: "auto"},
		{yaml: "memory_limit: off", want: "off"},
		{yaml: "memory_limit: 256MiB", want: "256MiB", bytes: 256 << 20},
		{yaml: "memory_limit: 268435456", want: "268435456", bytes: 256 << 20},
		{env: "AMI_BRIDGE_MEMORY_LIMIT=1GiB", want: "1GiB", bytes: 1 << 30},
		{yaml: "memory_limit: 1GiB", env: "AMI_BRIDGE_MEMORY_LIMIT=off", want: "off"},
	}
	for _, tt := range tests {
		var env []string
		if tt.env != "" {
			env = []string{tt.env}
		}
		cfg := mustLoad(t, onePBX+tt.yaml+"\n", env)
		n, err := cfg.MemoryLimit.Bytes()
		if cfg.MemoryLimit != tt.want || n != tt.bytes || err != nil {
			t.Errorf("%q %q: memory_limit %q, %d bytes, %v; want %q, %d", tt.yaml, tt.env, cfg.MemoryLimit, n, err, tt.want, tt.bytes)
		}
	}

	bad := []struct{ yaml, problem string }{
		{"memory_limit: lots", `memory_limit: want auto, off or a size: "lots" is not a whole number of bytes with an optional unit (B, KiB, MiB, GiB, KB, MB, GB), as in 256MiB`},
		{"memory_limit: 1.5GiB", `memory_limit: want auto, off or a size: "1.5GiB" is not a whole number`},
		{"memory_limit: 256mb", `memory_limit: want auto, off or a size: "256mb" is not a whole number`},
		{"memory_limit: -1", `memory_limit: want auto, off or a size: "-1" is not a whole number`},
		{`memory_limit: ""`, `memory_limit: want auto, off or a size: "" is not a whole number`},
		{"memory_limit: 0", "memory_limit: 0 would make the garbage collector run without pause"},
		{"memory_limit: 0MiB", "memory_limit: 0 would make the garbage collector run without pause"},
		{"memory_limit: 9999999999GiB", `memory_limit: want auto, off or a size: "9999999999GiB" is too large`},
	}
	for _, tt := range bad {
		_, err := load(t, onePBX+tt.yaml+"\n", nil)
		probs := problemsOf(t, err)
		if !slices.ContainsFunc(probs, func(p string) bool { return strings.HasPrefix(p, tt.problem) }) {
			t.Errorf("%s: problems %q, want one starting %q", tt.yaml, probs, tt.problem)
		}
	}
}

// The event buffer's bounds, which memory_limit auto is derived from, can
// be set from the environment like the other top-level keys.
func TestLoad_EventBufferFromTheEnvironment(t *testing.T) {
	cfg := mustLoad(t, onePBX, []string{"AMI_BRIDGE_EVENT_BUFFER=1000", "AMI_BRIDGE_EVENT_BUFFER_BYTES=1048576"})
	if cfg.EventBuffer != 1000 || cfg.EventBufferBytes != 1<<20 {
		t.Errorf("event_buffer %d, event_buffer_bytes %d; want 1000, 1048576", cfg.EventBuffer, cfg.EventBufferBytes)
	}
}
