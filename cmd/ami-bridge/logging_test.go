package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
)

// TestBridgeLogger_SameJSONAsZerolog checks that a line the bridge writes
// through bridgeLogger is the line zerolog wrote when the bridge took a
// zerolog.Logger: same level names, "error" field, field types and order.
// Log collectors and the integration tests match on them.
func TestBridgeLogger_SameJSONAsZerolog(t *testing.T) {
	stamp := regexp.MustCompile(`"time":"[^"]*"`)
	err := errors.New("nats: connection closed")
	tests := []struct {
		name  string
		zl    func(zerolog.Logger)
		slogf func(*slog.Logger)
	}{
		{"debug",
			func(l zerolog.Logger) { l.Debug().Err(err).Msg("HA: release") },
			func(l *slog.Logger) { l.Debug("HA: release", "error", err) }},
		{"info",
			func(l zerolog.Logger) {
				l.Info().Str("stream", "AMI").Strs("subjects", []string{"ami.*.event.>"}).Int("replicas", 3).Bool("matched", true).Msg("created")
			},
			func(l *slog.Logger) {
				l.Info("created", "stream", "AMI", "subjects", []string{"ami.*.event.>"}, "replicas", 3, "matched", true)
			}},
		{"warn attrs",
			func(l zerolog.Logger) {
				l.Warn().Err(err).Uint64("seq", 42).Str("event", "Newchannel").Uint64("dropped_total", 1025).Msg("dropped")
			},
			func(l *slog.Logger) {
				l.LogAttrs(context.Background(), slog.LevelWarn, "dropped",
					slog.Any("error", err), slog.Uint64("seq", 42), slog.String("event", "Newchannel"), slog.Uint64("dropped_total", 1025))
			}},
		{"raw json",
			func(l zerolog.Logger) { l.Info().RawJSON("checkpoint", []byte(`{"seq":7}`)).Msg("released") },
			func(l *slog.Logger) { l.Info("released", "checkpoint", json.RawMessage(`{"seq":7}`)) }},
		{"error",
			func(l zerolog.Logger) { l.Error().Err(err).Msg("encode status") },
			func(l *slog.Logger) { l.Error("encode status", "error", err) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var zbuf, sbuf bytes.Buffer
			zlog := newLogger(config.Log{Level: "debug", Format: "json"}, &zbuf)
			tt.zl(zlog.With().Str("server", "pbx1").Str("session", "events").Logger())
			viaSlog := newLogger(config.Log{Level: "debug", Format: "json"}, &sbuf)
			tt.slogf(bridgeLogger(viaSlog).With("server", "pbx1", "session", "events"))
			want := stamp.ReplaceAllString(zbuf.String(), `"time":""`)
			got := stamp.ReplaceAllString(sbuf.String(), `"time":""`)
			if got != want || !bytes.Contains(sbuf.Bytes(), []byte(`"time":"2`)) {
				t.Errorf("through slog:\n%s\nzerolog writes:\n%s", sbuf.String(), zbuf.String())
			}
		})
	}
}

// TestBridgeLogger_Level checks that the zerolog level gates the bridge's
// lines, so a disabled level is cheap on the bridge's event path.
func TestBridgeLogger_Level(t *testing.T) {
	var buf bytes.Buffer
	log := bridgeLogger(newLogger(config.Log{Level: "warn", Format: "json"}, &buf))
	if log.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("info is enabled at level warn")
	}
	log.Info("hidden")
	log.Warn("shown")
	if bytes.Contains(buf.Bytes(), []byte("hidden")) || !bytes.Contains(buf.Bytes(), []byte(`"level":"warn"`)) {
		t.Errorf("log = %s", buf.String())
	}
}
