package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Real nats-server processes for cluster tests, so that kill -9 is a real
// kill (an embedded server's Shutdown hands its leaderships over first,
// which a crash never does).

// NATSProcToken is the client token of the servers StartNATSProcs starts.
const NATSProcToken = "t0ken"

// JobStoreStreams are the JetStream streams the job store creates: a
// cluster is healthy again when each has a leader and current replicas.
var JobStoreStreams = []string{"KV_prism_jobs", "KV_prism_nodes", "PRISM_DISPATCH"}

// NATSServerBin is build/bin/nats-server, built by `make test` (make
// nats-server) from the module in go.mod, never committed; or
// $PRISM_NATS_SERVER. Outside CI a missing binary skips the test, in CI it
// fails it.
func NATSServerBin(t testing.TB) string {
	t.Helper()
	p := os.Getenv("PRISM_NATS_SERVER")
	if p == "" {
		p = filepath.Join(moduleRoot(t), "build", "bin", "nats-server")
	}
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("no nats-server binary at %s: `make test` builds it (make nats-server, or go build -o build/bin/nats-server github.com/nats-io/nats-server/v2)", p)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// NATSProc is one nats-server process, restartable with the same
// configuration, ports and store.
type NATSProc struct {
	t         testing.TB
	bin, conf string
	Name      string
	ClientURL string
	Monitor   string // host:port of its HTTP monitoring (/jsz), "" for none
	cmd       *exec.Cmd
	Log       *SyncBuffer
	Running   bool
}

// NewNATSProc describes a server to run bin with the configuration file
// conf; Start runs it.
func NewNATSProc(t testing.TB, bin, conf, name, clientURL string) *NATSProc {
	return &NATSProc{t: t, bin: bin, conf: conf, Name: name, ClientURL: clientURL}
}

// Start runs the server and waits until it accepts clients.
func (p *NATSProc) Start() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatal(err)
	}
}

// start runs the server; an error says why it does not accept clients,
// with its log.
func (p *NATSProc) start() error {
	p.Log = &SyncBuffer{}
	p.cmd = exec.Command(p.bin, "-c", p.conf)
	p.cmd.Stdout, p.cmd.Stderr = p.Log, p.Log
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.Running = true
	addr := strings.TrimPrefix(p.ClientURL, "nats://")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			p.Stop(syscall.SIGKILL)
			return fmt.Errorf("%s not accepting clients after 15 s:\n%s", p.Name, p.Log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the server with sig (SIGKILL: a crash; SIGTERM: a shutdown)
// and waits for the process.
func (p *NATSProc) Stop(sig syscall.Signal) {
	if !p.Running {
		return
	}
	p.Running = false
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Wait()
}

// NATSProcs is a cluster of nats-server processes.
type NATSProcs struct {
	Procs []*NATSProc
}

// StartNATSProcs starts n nats-server processes with JetStream, clustered
// over loopback routes, each with its own store and monitoring port, and
// waits until JetStream answers (a meta leader is elected). They are
// stopped at the end of the test.
func StartNATSProcs(t testing.TB, n int) *NATSProcs {
	t.Helper()
	bin := NATSServerBin(t)
	// Ports are picked free and released before the servers bind them, so
	// another process may take one in between: then start over on others.
	var err error
	for range 3 {
		var s *NATSProcs
		if s, err = startNATSProcs(t, bin, n); err == nil {
			return s
		}
		t.Logf("nats-server cluster did not start, trying other ports: %v", err)
	}
	t.Fatal(err)
	return nil
}

func startNATSProcs(t testing.TB, bin string, n int) (*NATSProcs, error) {
	var routes []string
	clients, routePorts, monitors := make([]string, n), make([]string, n), make([]string, n)
	for i := range n {
		clients[i], routePorts[i], monitors[i] = FreeAddr(t), FreeAddr(t), FreeAddr(t)
		routes = append(routes, "nats://"+routePorts[i])
	}
	s := &NATSProcs{}
	for i := range n {
		dir := t.TempDir()
		name := fmt.Sprintf("nats%d", i+1)
		conf := fmt.Sprintf(`server_name: %s
listen: %s
http: %s
authorization { token: %q }
jetstream { store_dir: %q }
cluster {
  name: prism-test
  listen: %s
  routes: [%s]
}
`, name, clients[i], monitors[i], NATSProcToken, filepath.Join(dir, "js"), routePorts[i], strings.Join(routes, ", "))
		file := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		p := NewNATSProc(t, bin, file, name, "nats://"+clients[i])
		p.Monitor = monitors[i]
		s.Procs = append(s.Procs, p)
	}
	stopAll := func() {
		for _, p := range s.Procs {
			p.Stop(syscall.SIGKILL)
		}
	}
	for _, p := range s.Procs {
		if err := p.start(); err != nil {
			stopAll()
			return nil, err
		}
		t.Cleanup(func() { p.Stop(syscall.SIGTERM) })
	}
	nc := DialNATSURL(t, s.Procs[0].ClientURL)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			stopAll()
			return nil, fmt.Errorf("JetStream not ready on the cluster after 30 s: %w", err)
		}
	}
}

// URLs are the servers' client URLs.
func (s *NATSProcs) URLs() []string {
	var out []string
	for _, p := range s.Procs {
		out = append(out, p.ClientURL)
	}
	return out
}

// ByName returns the server called name, nil if none.
func (s *NATSProcs) ByName(name string) *NATSProc {
	for _, p := range s.Procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Other is a running server other than not.
func (s *NATSProcs) Other(not ...*NATSProc) *NATSProc {
	for _, p := range s.Procs {
		if p.Running && !containsProc(not, p) {
			return p
		}
	}
	return nil
}

func containsProc(ps []*NATSProc, p *NATSProc) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// MetaLeader is the JetStream meta leader as the running servers' /jsz
// report it ("" while there is none). Consumer creation goes through it,
// so a KV watcher started while it is being elected waits.
func (s *NATSProcs) MetaLeader() string {
	client := http.Client{Timeout: time.Second}
	for _, p := range s.Procs {
		if !p.Running || p.Monitor == "" {
			continue
		}
		resp, err := client.Get("http://" + p.Monitor + "/jsz")
		if err != nil {
			continue
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		err = json.NewDecoder(resp.Body).Decode(&jsz)
		resp.Body.Close()
		if err == nil && jsz.Meta != nil && jsz.Meta.Leader != "" {
			return jsz.Meta.Leader
		}
	}
	return ""
}

// DialNATSURL connects to one server only (no other URL to fail over to),
// so that what the test sees does not depend on the servers it kills.
// The connection is closed at the end of the test.
func DialNATSURL(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Token(NATSProcToken), nats.Name("test-observer"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StreamLeaders returns the leader of each job store stream and, if not
// every stream has a leader and replicas-1 current followers, what is
// missing.
func StreamLeaders(nc *nats.Conn, replicas int) (map[string]string, string) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err.Error()
	}
	leaders := map[string]string{}
	var missing []string
	for _, name := range JobStoreStreams {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := streamInfo(ctx, js, name)
		cancel()
		switch {
		case err != nil:
			missing = append(missing, name+": "+err.Error())
			continue
		case info.Cluster == nil || info.Cluster.Leader == "":
			missing = append(missing, name+": no leader")
			continue
		}
		leaders[name] = info.Cluster.Leader
		if len(info.Cluster.Replicas) != replicas-1 {
			missing = append(missing, fmt.Sprintf("%s: %d replicas besides the leader %s (configured %d)", name, len(info.Cluster.Replicas), info.Cluster.Leader, info.Config.Replicas))
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				missing = append(missing, fmt.Sprintf("%s: replica %s current %v offline %v", name, r.Name, r.Current, r.Offline))
			}
		}
	}
	return leaders, strings.Join(missing, "; ")
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// WaitStreamsHealthy waits until every job store stream has a leader and
// two current followers, and returns the leaders.
func WaitStreamsHealthy(t testing.TB, nc *nats.Conn, timeout time.Duration) map[string]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leaders, missing := StreamLeaders(nc, 3)
		if missing == "" {
			return leaders
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream streams not healthy after %s: %s", timeout, missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
