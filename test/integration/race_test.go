//go:build race

package integration

// raceEnabled is true when the tests run under -race; the bridge binary is
// then built with -race too.
const raceEnabled = true
