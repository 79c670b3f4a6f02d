package main

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
)

// newLogger returns the process logger writing to w. Format "auto" is
// console on a terminal and JSON otherwise, so log collectors get JSON
// without being asked.
func newLogger(c config.Log, w io.Writer) zerolog.Logger {
	tty := isTerminal(w)
	if useConsole(c.Format, tty) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !tty}
	}
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil || level == zerolog.NoLevel {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// bridgeLogger is log as the *slog.Logger the bridge package takes: the
// bridge's lines go through the same zerolog writer, level and fields
// (slog's "error" attribute stays zerolog's "error" field).
func bridgeLogger(log zerolog.Logger) *slog.Logger {
	return slog.New(zerolog.NewSlogHandler(log))
}

// useConsole says whether format selects the human console writer.
func useConsole(format string, tty bool) bool {
	switch format {
	case "console":
		return true
	case "json":
		return false
	}
	return tty
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func init() {
	// Ami-Time carries nanoseconds; the log keeps the same precision.
	zerolog.TimeFieldFormat = time.RFC3339Nano
}
