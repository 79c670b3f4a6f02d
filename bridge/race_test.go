//go:build race

package bridge

// raceEnabled is true under -race, which makes goroutines and their
// stacks larger (TestOnDemand_IdleMemory).
const raceEnabled = true
