package testutil

import (
	"bytes"
	"os/exec"
	"sync"
	"syscall"
	"testing"
)

// SyncBuffer is a bytes.Buffer that a process or logger writes to while the
// test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Browser is a headless Chromium (Debian's package) in its own process
// group, stopped when the test ends.
type Browser struct {
	cmd    *exec.Cmd
	out    *SyncBuffer
	exited chan struct{}
}

// StartBrowser opens url in headless Chromium with the flags this machine
// needs (no sandbox as root, no background networking, which the closed
// network refuses), a fresh profile, autoplay allowed and timers and media
// running at full speed in a window nobody sees; flags are added (e.g. a
// fake camera: --use-fake-device-for-media-stream). It fails the test when
// Chromium is missing: `make test` installs it.
func StartBrowser(t testing.TB, url string, flags ...string) *Browser {
	t.Helper()
	return startBrowser(t, nil, url, flags)
}

// StartBrowserIn is StartBrowser inside the network namespace ns: the
// browser reaches this side at ns.HostIP over the veth pair, through
// whatever Shape or Limit put on it, as a viewer on another machine would.
func StartBrowserIn(t testing.TB, ns *NetNS, url string, flags ...string) *Browser {
	t.Helper()
	return startBrowser(t, ns, url, flags)
}

func startBrowser(t testing.TB, ns *NetNS, url string, flags []string) *Browser {
	t.Helper()
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		t.Fatal("chromium not found: run `make test`, which installs Debian's chromium package")
	}
	b := &Browser{out: &SyncBuffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command(chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-port=0", "--enable-logging=stderr")
	b.cmd.Args = append(append(b.cmd.Args, flags...), url)
	if ns != nil {
		// ip netns exec enters the namespace and execs chromium in place,
		// so the process group below is still chromium's.
		b.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name}, b.cmd.Args...)...)
	}
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	// Its own process group, so that Close ends the renderer and GPU
	// processes too.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	go func() { // returns when chromium exits (at the latest in Close)
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(b.Close)
	return b
}

// Close kills the browser's process group and waits for it. Calling it
// again does nothing.
func (b *Browser) Close() {
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	<-b.exited
}

// Exited is closed when the browser exits.
func (b *Browser) Exited() <-chan struct{} { return b.exited }

// Output is what the browser printed so far.
func (b *Browser) Output() string { return b.out.String() }
