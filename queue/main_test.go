package queue

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// FFmpeg logs through slog.Default; the failures some tests provoke on
	// purpose would fill the output. PRISM_TEST_LOG=1 shows everything.
	if os.Getenv("PRISM_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	os.Exit(m.Run())
}
