package bridge

import (
	"errors"
	"fmt"
	"strings"
)

// ValidateGlob returns an error when pattern is not a glob the bridge can
// use in ServerConfig's EventsInclude, EventsExclude, ActionsAllow and
// ActionsDeny (the syntax is in glob.go: '*', '?', '[a-z]', '[!a-z]',
// ASCII case ignored). It refuses a blank pattern, a '[' without its ']',
// an empty class and a reversed range. The configuration loader calls it,
// so that a pattern New would refuse never passes validation.
func ValidateGlob(pattern string) error {
	p := strings.TrimSpace(pattern)
	if p == "" {
		return errors.New("empty pattern")
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '[' {
			continue
		}
		_, width, valid := matchClass(p[i:], 'a')
		if !valid {
			return fmt.Errorf("%q is not a valid glob: a character class needs a closing ']', at least one member and ranges low-high", pattern)
		}
		i += width - 1
	}
	return nil
}

// ValidateActionSessions returns an error when n is not a number of action
// sessions New accepts (1 to MaxActionSessions; New reads 0 as
// DefaultActionSessions). The configuration loader calls it, so that its
// bounds are the bridge's.
func ValidateActionSessions(n int) error {
	if n < 1 || n > MaxActionSessions {
		return fmt.Errorf("%d: want 1 to %d", n, MaxActionSessions)
	}
	return nil
}

// ValidateMaxPendingRequests checks ServerConfig.MaxPendingRequests, for
// configuration checkers that report before New.
func ValidateMaxPendingRequests(n int) error {
	if n < 1 || n > MaxMaxPendingRequests {
		return fmt.Errorf("%d: want 1 to %d", n, MaxMaxPendingRequests)
	}
	return nil
}

// validateGlobs checks every glob list of sc, naming each bad pattern.
func validateGlobs(sc ServerConfig) error {
	var errs []error
	for _, l := range []struct {
		key   string
		globs []string
	}{
		{"events include", sc.EventsInclude},
		{"events exclude", sc.EventsExclude},
		{"actions allow", sc.ActionsAllow},
		{"actions deny", sc.ActionsDeny},
	} {
		for i, g := range l.globs {
			if err := ValidateGlob(g); err != nil {
				errs = append(errs, fmt.Errorf("%s[%d]: %w", l.key, i, err))
			}
		}
	}
	return errors.Join(errs...)
}
