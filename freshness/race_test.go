//go:build race

package freshness

// raceEnabled: the race detector slows the simulation about tenfold.
const raceEnabled = true
