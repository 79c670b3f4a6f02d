package main

import "testing"

// TestParseFlags_Bin: -bin names the daemon to run, so that no build
// happens and a wrapper script can set the runtime's variables.
func TestParseFlags_Bin(t *testing.T) {
	o, err := parseFlags([]string{"-bin", "/tmp/wrapped-ami-bridge", "-modes", "pace"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Bin != "/tmp/wrapped-ami-bridge" {
		t.Errorf("Bin %q, want the -bin path", o.Bin)
	}
}
