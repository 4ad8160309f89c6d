package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// calibration is what `prism bench --calibrate` measured on this machine:
// the encoded pixel rate a node offers as its capacity for job placement.
type calibration struct {
	PixelsPerSecond float64   `json:"pixels_per_second"`
	Ladder          string    `json:"ladder"`
	Measured        time.Time `json:"measured"`
}

// CapacityFile is where a data directory keeps the calibration.
func CapacityFile(dataDir string) string { return filepath.Join(dataDir, "capacity.json") }

// SaveCapacity records a measured pixel rate as the node's capacity.
func SaveCapacity(dataDir string, pixelsPerSecond float64, ladder string) error {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(calibration{PixelsPerSecond: pixelsPerSecond, Ladder: ladder, Measured: time.Now().UTC()}, "", "  ")
	return os.WriteFile(CapacityFile(dataDir), append(b, '\n'), 0o644)
}

// LoadCapacity returns the calibrated capacity, or 0 when none was saved.
func LoadCapacity(dataDir string) (float64, error) {
	b, err := os.ReadFile(CapacityFile(dataDir))
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var c calibration
	if err := json.Unmarshal(b, &c); err != nil || c.PixelsPerSecond <= 0 {
		return 0, fmt.Errorf("%s: not a calibration from prism bench --calibrate", CapacityFile(dataDir))
	}
	return c.PixelsPerSecond, nil
}
