package bus

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StartLocalCluster starts n embedded servers on loopback, routed to each
// other with clustered JetStream (streams then use 3 replicas), each with
// its store under dataDir/s<i>. It is how tests (and anyone trying a
// cluster on one machine) get a real NATS cluster without installing one.
// URLs returns the client URLs; stop them with Close on each.
//
// The route ports are picked free and released before the servers bind
// them, so another process may take one in between: a start that fails
// that way is tried again on new ports.
func StartLocalCluster(n int, dataDir, token string) ([]*Embedded, error) {
	var err error
	for range 3 {
		var servers []*Embedded
		if servers, err = startLocalCluster(n, dataDir, token); err == nil || !strings.Contains(err.Error(), "address already in use") {
			return servers, err
		}
	}
	return nil, err
}

func startLocalCluster(n int, dataDir, token string) ([]*Embedded, error) {
	ports, err := freeLoopbackPorts(n)
	if err != nil {
		return nil, err
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(p))
	}
	// Routes take a credential even on loopback: another local user could
	// otherwise join the cluster and read every job.
	routeToken := randomHex(16)
	servers := make([]*Embedded, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { // each server waits for its peers to become ready
			servers[i], errs[i] = StartEmbedded(EmbeddedConfig{
				Name: fmt.Sprintf("s%d", i+1), DataDir: filepath.Join(dataDir, fmt.Sprintf("s%d", i+1)), Token: token,
				Cluster: ClusterConfig{Name: "prism-local", Listen: "127.0.0.1:" + strconv.Itoa(ports[i]), Routes: routes,
					Token: routeToken},
				ReadyTimeout: 20 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, s := range servers {
			if s != nil {
				s.Close()
			}
		}
		return nil, err
	}
	return servers, nil
}

// freeLoopbackPorts reserves n ports (listen, note, close): every route
// address must be known before any server starts.
func freeLoopbackPorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
