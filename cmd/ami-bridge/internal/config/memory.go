package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MemoryLimit is the memory_limit key: the soft limit the Go runtime
// keeps the process's memory under by collecting sooner. It is
// MemoryLimitAuto, MemoryLimitOff, or a size, as in 256MiB (see parseSize). The
// environment variable GOMEMLIMIT, when set, wins over it.
type MemoryLimit string

// The memory_limit values that are not a size.
const (
	// MemoryLimitAuto derives the limit from the event buffers' bounds.
	MemoryLimitAuto MemoryLimit = "auto"
	// MemoryLimitOff sets no limit: the runtime's default.
	MemoryLimitOff MemoryLimit = "off"
)

// DefaultMemoryLimit is the memory_limit used where no layer sets it.
const DefaultMemoryLimit = MemoryLimitAuto

// Bytes returns the limit m gives in bytes, or 0 for auto and off.
func (m MemoryLimit) Bytes() (int64, error) {
	if m == MemoryLimitAuto || m == MemoryLimitOff {
		return 0, nil
	}
	n, err := parseSize(string(m))
	switch {
	case err != nil:
		return 0, fmt.Errorf("want auto, off or a size: %w", err)
	case n == 0:
		return 0, errors.New("0 would make the garbage collector run without pause; off sets no limit")
	}
	return n, nil
}

// sizeUnits are the units parseSize takes: GOMEMLIMIT's, and the decimal
// ones.
var sizeUnits = []struct {
	suffix string
	bytes  int64
}{
	// Before "B", which ends all the others.
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"B", 1},
}

// parseSize reads a byte count: a whole number, alone or followed by a
// unit without a space, case-sensitive: B, KiB, MiB, GiB (powers of
// 1024), KB, MB, GB (powers of 1000). "256MiB" is 268435456.
func parseSize(s string) (int64, error) {
	digits, unit := s, int64(1)
	for _, u := range sizeUnits {
		if d, ok := strings.CutSuffix(s, u.suffix); ok {
			digits, unit = d, u.bytes
			break
		}
	}
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		// A sign, a space, a fraction or an unknown unit.
		return 0, fmt.Errorf("%q is not a whole number of bytes with an optional unit (B, KiB, MiB, GiB, KB, MB, GB), as in 256MiB", s)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}

func (c *Config) checkMemoryLimit(p *problems) {
	if _, err := c.MemoryLimit.Bytes(); err != nil {
		p.add("memory_limit: %v", err)
	}
}
