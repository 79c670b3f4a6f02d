package bridge

import "testing"

func TestSemVer(t *testing.T) {
	for v, want := range map[string]bool{
		"1.2.3": true, "0.0.0": true, "0.0.0-dev": true, "1.2.3-rc.1+build.5": true, "10.20.30": true,
		"v1.2.3": false, "1.2": false, "01.2.3": false, "1.2.3-": false, "dev": false, "": false, "1.2.3 ": false,
	} {
		if got := semVer(v); got != want {
			t.Errorf("semVer(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestServiceVersion(t *testing.T) {
	tests := map[string]string{
		"v1.2.3":        "1.2.3",
		"1.2.3-rc.1":    "1.2.3-rc.1",
		"dev":           "0.0.0-dev",
		"v1.2.3-4-gabc": "1.2.3-4-gabc",
		"abc123 dirty":  "0.0.0-abc123-dirty",
		"":              "0.0.0",
	}
	for in, want := range tests {
		if got := serviceVersion(in); got != want {
			t.Errorf("serviceVersion(%q) = %q, want %q", in, got, want)
		}
		if !semVer(serviceVersion(in)) {
			t.Errorf("serviceVersion(%q) = %q is no semantic version", in, serviceVersion(in))
		}
	}
}
