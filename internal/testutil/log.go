package testutil

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

// Logger collects a test's logs and prints them only when it fails (or
// always with PRISM_TEST_LOG=1), so a passing run stays quiet.
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	if os.Getenv("PRISM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	buf := &SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// QuietMain runs a package's tests with slog.Default discarded: FFmpeg logs
// through it, and the failures some tests provoke on purpose would fill the
// output. PRISM_TEST_LOG=1 shows everything.
func QuietMain(m *testing.M) {
	if os.Getenv("PRISM_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	os.Exit(m.Run())
}

// LeakCheck must be the first call of a test: cleanups run last-in,
// first-out, so the goroutine count is checked after every server,
// connection and node the test registered has been shut down.
func LeakCheck(t testing.TB) {
	t.Helper()
	t.Cleanup(CheckGoroutines(t))
}

// NeedsFFmpeg skips a test under -short (make test-unit): it runs the
// transcoder.
func NeedsFFmpeg(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs FFmpeg: skipped with -short")
	}
}
