//go:build !unix

package main

import "time"

// processCPU does not know the process's CPU time here: GOMAXPROCS is
// left to the runtime.
func processCPU() (time.Duration, bool) { return 0, false }
