package config

import (
	"strings"
	"testing"
	"time"
)

func TestHA_DefaultsAndEnvironment(t *testing.T) {
	cfg := mustLoad(t, onePBX+"jetstream:\n  enabled: true\nha:\n  enabled: true\n",
		[]string{"AMI_BRIDGE_HA__STANDBY_BUFFER__BYTES=1048576", "AMI_BRIDGE_HA__LEASE_TTL=3s"})
	want := HA{Enabled: true, Bucket: "ami_bridge_leases", LeaseTTL: 3 * time.Second,
		CheckpointInterval: 100 * time.Millisecond, StandbyBuffer: StandbyBuffer{Age: 10 * time.Second, Bytes: 1 << 20}}
	if cfg.HA != want {
		t.Fatalf("ha = %+v, want %+v", cfg.HA, want)
	}
	o := cfg.HA.Options()
	if !o.Enabled || o.StandbyAge != 10*time.Second || o.StandbyBytes != 1<<20 || o.LeaseTTL != 3*time.Second {
		t.Errorf("bridge options = %+v", o)
	}
}

func TestHA_Problems(t *testing.T) {
	_, err := load(t, onePBX+`ha:
  enabled: true
  bucket: "a.b"
  lease_ttl: 500ms
  checkpoint_interval: 1s
  standby_buffer:
    age: -1s
    bytes: -1
`, nil)
	got := strings.Join(problemsOf(t, err), "\n")
	for _, want := range []string{
		"ha.enabled: needs jetstream.enabled",
		`ha.bucket: "a.b" must be`,
		"ha.lease_ttl: 500ms must be at least 1s",
		"ha.checkpoint_interval: 1s must be positive and at most a quarter of ha.lease_ttl",
		"ha.standby_buffer.age: -1s must be more than twice ha.lease_ttl",
		"ha.standby_buffer.bytes: must not be negative",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

func TestHA_OffChecksNothing(t *testing.T) {
	cfg := mustLoad(t, onePBX+"ha:\n  lease_ttl: 1ms\n", nil)
	if cfg.HA.Enabled {
		t.Fatal("ha enabled by default")
	}
}
