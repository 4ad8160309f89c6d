//go:build race

package transcode

// The race detector's shadow memory grows with every allocation site
// touched, so RSS limits are looser under -race.
const raceEnabled = true
