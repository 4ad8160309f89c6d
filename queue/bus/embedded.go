package bus

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the nats-server a Prism node runs in-process.
type EmbeddedConfig struct {
	// Name is the server name, unique within a cluster (default
	// "prism-<random>").
	Name string
	// DataDir is required: JetStream keeps its store under DataDir/nats.
	// (Left empty, nats-server would silently use a temporary directory and
	// lose every job on reboot.)
	DataDir string
	// Listen is the client address, "host:port" (port 0: any free one). The
	// default is 127.0.0.1 on a free port: enough for this node's worker
	// processes, which must connect over TCP because an in-process pipe
	// cannot cross processes.
	Listen string
	// DontListen serves in-process connections only (Connect); ClientURL
	// is then not reachable.
	DontListen bool
	// Token is the client authentication token; "" picks a random one
	// (read it back with Token to hand it to worker processes).
	Token string
	// MaxPayload is the largest message in bytes (0: the server's 1 MiB).
	MaxPayload int32
	// Cluster, when Cluster.Listen is set, routes this server to others;
	// streams then need Replicas 3 (StoreConfig.Replicas).
	Cluster ClusterConfig
	// MaxMemory and MaxStore limit JetStream (0: nats-server's defaults,
	// a share of this machine's memory and disk).
	MaxMemory, MaxStore int64
	// ReadyTimeout bounds the start (default 10 s).
	ReadyTimeout time.Duration
	// Log receives the server's log (default slog.Default()).
	Log *slog.Logger
	// Clients are the other applications that may connect (a data
	// pipeline publishing events.<stream>, reading events.<stream>.timed
	// and actions.<stream>), each with its own token and subjects.
	Clients []ClientUser
	// Configure, if set, adjusts the server options last: TLS, NKey users,
	// accounts, whatever the fields above do not cover.
	Configure func(*server.Options)
}

// ClusterConfig routes an embedded server to its peers.
type ClusterConfig struct {
	Name   string   // the same on every peer
	Listen string   // "host:port" for routes
	Routes []string // peers' route URLs, "nats://host:port"; may include this server's own
	// Token, the same on every peer, is the route credential: peers without
	// it are refused, and routes to Routes present it (a route URL that
	// has its own user:password@ keeps it). "" accepts any peer.
	Token string
}

// routeUser is the user name routes present with ClusterConfig.Token.
const routeUser = "prism"

// MinRouteToken is the shortest ClusterConfig.Token accepted.
const MinRouteToken = 16

// Embedded is a running in-process nats-server with JetStream.
type Embedded struct {
	ns    *server.Server
	token string
	auth  *tokenAuth // nil when Configure replaced the token authentication
	log   *serverLog
	once  sync.Once
}

// StartEmbedded starts the server and returns once it accepts connections
// with JetStream enabled, or the reason it could not.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	opts, token, err := serverOptions(cfg)
	if err != nil {
		return nil, err
	}
	auth := installTokenAuth(opts, token)
	if len(cfg.Clients) > 0 {
		if auth == nil {
			return nil, fmt.Errorf("%w: Clients: the server's authentication was replaced (Configure)", ErrEmbedded)
		}
		if err := auth.addClients(cfg.Clients); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEmbedded, err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	sl := &serverLog{log: log.With("component", "nats-server", "server", opts.ServerName)}
	ns.SetLoggerV2(sl, false, false, false)
	go ns.Start() // returns at once; the server runs its own goroutines until Shutdown

	e := &Embedded{ns: ns, token: token, auth: auth, log: sl}
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// Poll rather than wait out the whole timeout: a server that hit a
	// fatal error (port in use, unusable store) never becomes ready.
	deadline := time.Now().Add(timeout)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		if m := sl.fatalMessage(); m != "" {
			e.Close()
			return nil, fmt.Errorf("%w %s: did not start: %s", ErrEmbedded, opts.ServerName, m)
		}
		if time.Now().After(deadline) {
			e.Close()
			return nil, fmt.Errorf("%w %s: not ready for connections after %s", ErrEmbedded, opts.ServerName, timeout)
		}
	}
	if !ns.JetStreamEnabled() {
		e.Close()
		return nil, fmt.Errorf("%w %s: JetStream did not start (store %s)%s", ErrEmbedded, opts.ServerName, opts.StoreDir, e.fatalSuffix())
	}
	return e, nil
}

func (e *Embedded) fatalSuffix() string {
	if m := e.log.fatalMessage(); m != "" {
		return ": " + m
	}
	return ""
}

// serverOptions turns the config into nats-server options.
func serverOptions(cfg EmbeddedConfig) (*server.Options, string, error) {
	if cfg.DataDir == "" {
		return nil, "", fmt.Errorf("%w: DataDir is required (JetStream keeps jobs there)", ErrEmbedded)
	}
	name := cfg.Name
	if name == "" {
		name = "prism-" + randomHex(4)
	}
	token := cfg.Token
	if token == "" {
		token = randomHex(16)
	}
	opts := &server.Options{
		ServerName:         name,
		JetStream:          true,
		StoreDir:           filepath.Join(cfg.DataDir, "nats"),
		JetStreamMaxMemory: cfg.MaxMemory,
		JetStreamMaxStore:  cfg.MaxStore,
		NoSigs:             true, // signals belong to the Prism process
		DontListen:         cfg.DontListen,
		Authorization:      token,
		MaxPayload:         cfg.MaxPayload,
	}
	if !cfg.DontListen {
		listen := cfg.Listen
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		host, port, err := splitListen(listen)
		if err != nil {
			return nil, "", fmt.Errorf("%w: Listen: %w", ErrEmbedded, err)
		}
		opts.Host, opts.Port = host, port
	}
	if c := cfg.Cluster; c.Listen != "" {
		if c.Name == "" {
			return nil, "", fmt.Errorf("%w: Cluster.Name is required with Cluster.Listen", ErrEmbedded)
		}
		host, port, err := splitListen(c.Listen)
		if err != nil {
			return nil, "", fmt.Errorf("%w: Cluster.Listen: %w", ErrEmbedded, err)
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
		if c.Token != "" {
			if len(c.Token) < MinRouteToken {
				return nil, "", fmt.Errorf("%w: Cluster.Token: at least %d characters", ErrEmbedded, MinRouteToken)
			}
			opts.Cluster.Username, opts.Cluster.Password = routeUser, c.Token
		}
		if len(c.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
			if len(opts.Routes) != len(c.Routes) {
				return nil, "", fmt.Errorf("%w: Cluster.Routes: %q has an invalid URL", ErrEmbedded, c.Routes)
			}
			for _, r := range opts.Routes {
				if c.Token != "" && r.User == nil {
					r.User = url.UserPassword(routeUser, c.Token)
				}
			}
		}
	}
	if cfg.Configure != nil {
		cfg.Configure(opts)
	}
	return opts, token, nil
}

// installTokenAuth replaces nats-server's token check with tokenAuth, which
// also knows the workers' tokens (IssueWorkerToken). Options whose
// authentication Configure changed (users, NKeys, its own authenticator)
// are left as they are, without worker tokens.
func installTokenAuth(opts *server.Options, token string) *tokenAuth {
	if opts.Authorization != token || opts.CustomClientAuthentication != nil || opts.Username != "" ||
		len(opts.Users) > 0 || len(opts.Nkeys) > 0 || len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0 {
		return nil
	}
	auth := &tokenAuth{node: token}
	opts.CustomClientAuthentication = auth
	opts.Authorization = "" // tokenAuth checks it, in constant time
	return auth
}

// splitListen parses "host:port"; port 0 means any free port, which
// nats-server spells -1 (its 0 means the default 4222).
func splitListen(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// ClientURL is the TCP URL clients (worker processes, other nodes) connect
// to, with Token. With DontListen it is not reachable.
func (e *Embedded) ClientURL() string { return e.ns.ClientURL() }

// Token is the client authentication token.
func (e *Embedded) Token() string { return e.token }

// Server is the underlying nats-server, for monitoring and tests.
func (e *Embedded) Server() *server.Server { return e.ns }

// Connect opens an in-process connection (a pipe, no TCP). It cannot
// reconnect to a restarted server: a new Embedded is a new server object,
// so connections that must survive a restart use ClientURL over TCP.
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(e.ns), nats.Token(e.token), nats.Name("prism-inprocess")}, opts...)
	nc, err := nats.Connect(e.ns.ClientURL(), all...)
	if err != nil {
		return nil, fmt.Errorf("%w: in-process connection: %w", ErrConnect, err)
	}
	return nc, nil
}

// Close stops the server and waits until it stopped. Safe to call more
// than once.
func (e *Embedded) Close() {
	e.once.Do(func() {
		e.ns.Shutdown()
		e.ns.WaitForShutdown()
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	randomBytes(b)
	return hex.EncodeToString(b)
}

// randomBytes fills b; crypto/rand.Read never fails (it panics rather than
// return an error).
func randomBytes(b []byte) { _, _ = rand.Read(b) }
