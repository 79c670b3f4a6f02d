package config

import (
	"slices"
	"strings"
	"testing"
)

func TestHTTPAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9999": "127.0.0.1:9999",
		":9999":          "127.0.0.1:9999", // an empty host is loopback, not every interface
		"0.0.0.0:7038":   "0.0.0.0:7038",
		"0.0.0.0":        "0.0.0.0:7038",
		"localhost":      "localhost:7038",
		"::1":            "[::1]:7038",
		"[::1]":          "[::1]:7038",
		"[::]:8000":      "[::]:8000",
		"127.0.0.1:0":    "127.0.0.1:0",
	} {
		got, err := HTTPAddr(in)
		if err != nil || got != want {
			t.Errorf("HTTPAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"127.0.0.1:http", "127.0.0.1:70000", "a b", "http://x:1"} {
		if got, err := HTTPAddr(bad); err == nil {
			t.Errorf("HTTPAddr(%q) = %q, want an error", bad, got)
		}
	}
}

func TestLoad_HTTP(t *testing.T) {
	cfg := mustLoad(t, onePBX, nil)
	if cfg.HTTP.Addr != "" || cfg.HTTP.Ready != "all" {
		t.Errorf("default http %+v, want off and ready all", cfg.HTTP)
	}
	cfg = mustLoad(t, onePBX, []string{"AMI_BRIDGE_HTTP__LISTEN=127.0.0.1", "AMI_BRIDGE_HTTP__READY=any"})
	if cfg.HTTP.Addr != "127.0.0.1:7038" || cfg.HTTP.Ready != "any" {
		t.Errorf("http from the environment: %+v", cfg.HTTP)
	}
	cfg = mustLoad(t, onePBX+"http: {listen: '0.0.0.0:1'}\n", nil, "--http-listen", ":2")
	if cfg.HTTP.Addr != "127.0.0.1:2" {
		t.Errorf("the flag does not override the file: %+v", cfg.HTTP)
	}
	_, err := load(t, onePBX+"http: {listen: 'x:y', ready: some}\n", nil)
	got := problemsOf(t, err)
	if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, "http.listen:") }) ||
		!slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, "http.ready:") }) {
		t.Errorf("problems %q, want http.listen and http.ready", got)
	}
}
