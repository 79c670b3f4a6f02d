package amitest

import (
	_ "embed"
	"strings"
	"sync"
)

// The canned CLI outputs and ListCommands bodies, copied byte for byte
// from the captures of each Asterisk build.
var (
	//go:embed data/asterisk22.txt
	canned22 string
	//go:embed data/asterisk13.txt
	canned13 string
)

// cliTable is what one profile knows of the Asterisk CLI and of its
// action list.
type cliTable struct {
	canned       map[string]string // normalised command → output, LF-terminated lines
	known        [][]string        // command words, from "core show help"
	listCommands string            // ListCommands body: "Name: synopsis  (Priv: x)" lines
	noPriv       map[string]bool   // lower-case actions that need no class
}

var (
	cliOnce   [2]sync.Once
	cliTables [2]*cliTable
)

func loadCLI(p Profile) *cliTable {
	i := 0
	src := canned22
	if p == Asterisk13 {
		i, src = 1, canned13
	}
	cliOnce[i].Do(func() { cliTables[i] = parseCanned(src) })
	return cliTables[i]
}

// parseCanned reads the "=== <command>" sections of a canned file.
func parseCanned(src string) *cliTable {
	t := &cliTable{canned: map[string]string{}, noPriv: map[string]bool{}}
	var name string
	var body strings.Builder
	flush := func() {
		if name == "" {
			return
		}
		if name == "@ListCommands" {
			t.listCommands = body.String()
		} else {
			t.canned[normaliseCommand(name)] = body.String()
		}
		body.Reset()
	}
	for line := range strings.Lines(src) {
		if strings.HasPrefix(line, "#") && name == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "=== "); ok {
			flush()
			name = strings.TrimRight(rest, "\n")
			continue
		}
		body.WriteString(line)
	}
	flush()
	for line := range strings.Lines(t.canned["core show help"]) {
		cmd, _, _ := strings.Cut(line, " -- ")
		var words []string
		for _, w := range strings.Fields(cmd) {
			if strings.ContainsAny(w[:1], "[{<") {
				break
			}
			words = append(words, strings.ToLower(w))
		}
		if len(words) > 0 {
			t.known = append(t.known, words)
		}
	}
	for line := range strings.Lines(t.listCommands) {
		name, _, _ := strings.Cut(line, ":")
		if strings.Contains(line, "(Priv: <none>)") {
			t.noPriv[strings.ToLower(name)] = true
		}
	}
	return t
}

func (t *cliTable) noPrivilege(lowerAction string) bool { return t.noPriv[lowerAction] }

func normaliseCommand(c string) string { return strings.ToLower(strings.Join(strings.Fields(c), " ")) }

// noSuchCommand returns Asterisk's answer to an unknown CLI command. The
// hint is its find_best: the words up to and including the first one that
// no command starts with (the first word always counts, as observed).
func (t *cliTable) noSuchCommand(cmd string) string {
	words := strings.Fields(cmd)
	n := 0
	for n < len(words) {
		n++
		if n > 1 && !t.isPrefix(words[:n]) {
			break
		}
	}
	return "No such command '" + cmd + "' (type 'core show help " + strings.Join(words[:n], " ") + "' for other possible commands)\n"
}

func (t *cliTable) isPrefix(words []string) bool {
outer:
	for _, k := range t.known {
		if len(k) < len(words) {
			continue
		}
		for i, w := range words {
			if k[i] != strings.ToLower(w) {
				continue outer
			}
		}
		return true
	}
	return false
}
