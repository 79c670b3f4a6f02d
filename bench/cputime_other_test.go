//go:build !unix

package bench

import "time"

// cpuTime is not measured off unix: the cpu-ns/msg metric reads 0 there.
func cpuTime() time.Duration { return 0 }
