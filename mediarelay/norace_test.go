//go:build !race

package mediarelay

const raceEnabled = false
