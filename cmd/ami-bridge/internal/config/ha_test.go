package config

import (
	"strings"
	"testing"
	"time"
)

func TestHA_DefaultsAndEnvironment(t *testing.T) {
	cfg := mustLoad(t, onePBX+"nats:\n  url: nats://127.0.0.1:4222\njetstream:\n  enabled: true\nha:\n  enabled: true\n",
		[]string{"AMI_BRIDGE_HA__LEASE_TTL=3s"})
	want := HA{Enabled: true, Bucket: "ami_bridge_leases", LeaseTTL: 3 * time.Second,
		CheckpointInterval: 100 * time.Millisecond}
	if cfg.HA != want {
		t.Fatalf("ha = %+v, want %+v", cfg.HA, want)
	}
	o := cfg.HA.Options()
	if !o.Enabled || o.LeaseTTL != 3*time.Second {
		t.Errorf("bridge options = %+v", o)
	}
}

func TestHA_Problems(t *testing.T) {
	_, err := load(t, onePBX+`ha:
  enabled: true
  bucket: "a.b"
  lease_ttl: 500ms
  checkpoint_interval: 1s
`, nil)
	got := strings.Join(problemsOf(t, err), "\n")
	for _, want := range []string{
		"ha.enabled: needs jetstream enabled",
		`ha.bucket: "a.b": no`,
		"ha.enabled: needs nats.url: with only the embedded NATS server each bridge has its own lease bucket",
		"ha.lease_ttl: 500ms: want whole seconds, at least 1s",
		"ha.checkpoint_interval: 1s: want above 0 and at most a quarter of the lease ttl 500ms",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

// nats-server keeps a key's TTL in whole seconds: 1500ms would fence by
// 1.5 s a key that expires after 1 s.
func TestHA_FractionalLeaseTTLRefused(t *testing.T) {
	_, err := load(t, onePBX+"nats:\n  url: nats://127.0.0.1:4222\njetstream:\n  enabled: true\nha:\n  enabled: true\n  lease_ttl: 1500ms\n  checkpoint_interval: 100ms\n", nil)
	got := problemsOf(t, err)
	if len(got) != 1 || !strings.Contains(got[0], "ha.lease_ttl: 1.5s: want whole seconds") {
		t.Fatalf("problems = %q, want only the fractional lease_ttl", got)
	}
}

// Each embedded server has its own bucket, so every process would be
// active; at a leaf site the hub would source every event twice.
func TestHA_EmbeddedOnlyRefused(t *testing.T) {
	for name, extra := range map[string]string{
		"alone":     "",
		"leaf site": "nats:\n  embedded:\n    domain: paris\n    leafnodes:\n      remotes:\n        - url: nats-leaf://127.0.0.1:7422\n",
	} {
		_, err := load(t, onePBX+extra+"jetstream:\n  enabled: true\nha:\n  enabled: true\n", nil)
		got := problemsOf(t, err)
		if len(got) != 1 || !strings.Contains(got[0], "ha.enabled: needs nats.url") {
			t.Errorf("%s: problems = %q, want only ha.enabled needing nats.url", name, got)
		}
	}
}

func TestHA_OffChecksNothing(t *testing.T) {
	cfg := mustLoad(t, onePBX+"ha:\n  lease_ttl: 1ms\n", nil)
	if cfg.HA.Enabled {
		t.Fatal("ha enabled by default")
	}
}

// standby_buffer trimmed a standby's buffer by age; a configuration that
// still sets it, in the file or the environment, is told what replaced it.
func TestHA_StandbyBufferRemoved(t *testing.T) {
	for name, c := range map[string]struct {
		yaml string
		env  []string
	}{
		"file":        {"ha:\n  standby_buffer:\n    age: 30s\n", nil},
		"environment": {"", []string{"AMI_BRIDGE_HA__STANDBY_BUFFER__BYTES=1048576"}},
	} {
		_, err := load(t, onePBX+c.yaml, c.env)
		got := problemsOf(t, err)
		if len(got) != 1 || !strings.Contains(got[0], "ha.standby_buffer: removed: a standby now keeps what event_buffer and event_buffer_bytes allow") {
			t.Errorf("%s: problems = %q, want standby_buffer named as removed", name, got)
		}
	}
}
