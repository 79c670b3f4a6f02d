package amitest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// serveCommand runs a CLI command and answers in the profile's framing:
//
//   - Asterisk 22: "Response: Success" (Error for an unknown command),
//     ActionID, "Message: Command output follows", one "Output:" line per
//     CLI line (one empty "Output: " for no output).
//   - Asterisk 13: "Response: Follows", "Privilege: Command", ActionID,
//     the raw output in bare-LF lines, "--END COMMAND--". An unknown
//     command answers the same way, with "No such command" in the body.
func serveCommand(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	cmd := strings.TrimSpace(r.Get("Command"))
	if cmd == "" {
		w.Error("No command provided")
		return
	}
	body, ok := srv.runCLI(cmd)
	if srv.profile == Asterisk13 {
		w.buf = appendField(w.buf, "Response", "Follows")
		w.buf = appendField(w.buf, "Privilege", "Command")
		w.appendActionID()
		w.buf = append(w.buf, body...)
		w.buf = append(w.buf, "--END COMMAND--\r\n"...)
		w.end()
		return
	}
	status := "Success"
	if !ok {
		status = "Error"
	}
	w.buf = appendField(w.buf, "Response", status)
	w.appendActionID()
	w.buf = appendField(w.buf, "Message", "Command output follows")
	body = strings.TrimSuffix(body, "\n")
	for line := range strings.SplitSeq(body, "\n") {
		w.buf = appendField(w.buf, "Output", line)
		w.maybeFlush()
	}
	w.end()
}

// runCLI returns a command's output as LF-terminated lines, and false for
// an unknown command (the output is then Asterisk's "No such command").
func (s *Server) runCLI(cmd string) (string, bool) {
	norm := normaliseCommand(cmd)
	switch norm {
	case "core show uptime":
		return s.uptimeOutput(false), true
	case "core show uptime seconds":
		return s.uptimeOutput(true), true
	case "core show channels", "core show channels verbose":
		return s.channelsTable(), true
	case "core show channels concise":
		return s.channelsConcise(), true
	case "core show channels count":
		return channelsSummary(s.cliChannels(), s.pbx.processed.Load()), true
	}
	if out, ok := s.cli.canned[norm]; ok {
		return out, true
	}
	return s.cli.noSuchCommand(cmd), false
}

func (s *Server) uptimeOutput(seconds bool) string {
	secs := int(time.Since(s.started) / time.Second)
	if seconds {
		return fmt.Sprintf("System uptime: %d\nLast reload: %d\n", secs, secs)
	}
	u := uptimeString(secs)
	return "System uptime: " + u + "\nLast reload: " + u + "\n"
}

// uptimeString spells a duration as Asterisk's CLI does:
// "2 minutes, 3 seconds".
func uptimeString(secs int) string {
	units := []struct {
		name string
		size int
	}{{"year", 365 * 86400}, {"week", 7 * 86400}, {"day", 86400}, {"hour", 3600}, {"minute", 60}}
	var parts []string
	for _, u := range units {
		if n := secs / u.size; n > 0 {
			parts = append(parts, plural(n, u.name))
			secs %= u.size
		}
	}
	if secs > 0 || len(parts) == 0 {
		parts = append(parts, plural(secs, "second"))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

// channelsTable is "core show channels": the header, one row per channel,
// and the summary. Asterisk 13 truncates names to 20 columns.
func (s *Server) channelsTable() string {
	format := "%-64.64s %-32.32s %-7.7s %-30.30s\n"
	if s.profile == Asterisk13 {
		format = "%-20.20s %-20.20s %-7.7s %-30.30s\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, format, "Channel", "Location", "State", "Application(Data)")
	rows := s.cliChannels()
	for _, c := range rows {
		fmt.Fprintf(&b, format, c.name, c.exten+"@"+c.context+":"+strconv.Itoa(c.priority), "Up", c.app+"("+c.appData+")")
	}
	b.WriteString(channelsSummary(rows, s.pbx.processed.Load()))
	return b.String()
}

// channelsConcise is "core show channels concise": one '!'-separated line
// per channel.
func (s *Server) channelsConcise() string {
	var b strings.Builder
	for _, c := range s.cliChannels() {
		fmt.Fprintf(&b, "%s!%s!%s!%d!Up!%s!%s!%s!!!3!%d!!%s\n", c.name, c.context, c.exten, c.priority, c.app, c.appData, c.cidNum, c.secs, c.uniqueid)
	}
	return b.String()
}

// channelsSummary is the end of "core show channels" and all of "core
// show channels count": a call is two channels (a Local pair, or the two
// legs of a generated call).
func channelsSummary(rows []cliChan, processed int64) string {
	live := len(rows)
	calls := (live + 1) / 2
	return plural(live, "active channel") + "\n" + plural(calls, "active call") + "\n" + plural(int(processed), "call") + " processed\n"
}
