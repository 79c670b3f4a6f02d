package bridge

import "testing"

func TestSemVer(t *testing.T) {
	for v, want := range map[string]bool{
		"1.2.3": true, "0.0.0": true, "0.0.0-dev": true, "1.2.3-rc.1+build.5": true, "10.20.30": true,
		"v1.2.3": false, "1.2": false, "01.2.3": false, "1.2.3-": false, "dev": false, "": false, "1.2.3 ": false,
	} {
		if got := SemVer(v); got != want {
			t.Errorf("SemVer(%q) = %v, want %v", v, got, want)
		}
	}
}
