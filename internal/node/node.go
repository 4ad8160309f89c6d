// Package node assembles one Prism node: its NATS connection (an embedded
// server by default), the job store, the agent that claims and runs jobs
// (in worker processes or in-process), its capacity, and the media watcher
// that offers every running job's stream to this node's outputs through
// the stream registry, wherever the job runs, and follows its media while
// they use it (node.follow).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/config"
	"github.com/prism-streaming/prism/gpu"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/queue/relay"
	"github.com/prism-streaming/prism/queue/worker"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// ErrConfig: the node's configuration cannot be used as it is.
var ErrConfig = errors.New("node configuration")

// Node is this process's part in the cluster. Fill the exported fields,
// call Start, and Close at the end.
type Node struct {
	Config  *config.Config     // after Defaults and Validate
	Streams *pipeline.Registry // where followed streams are registered for the outputs
	Log     *slog.Logger

	id       string
	embedded *bus.Embedded // nil with an external cluster
	nc       *nats.Conn
	store    *jobs.Store
	agent    *jobs.Node
	workers  *worker.Supervisor // nil when jobs run in-process

	relay  *relayMetrics
	cancel context.CancelFunc
	wg     sync.WaitGroup // the media watcher
}

// Start connects (starting the embedded server when no URL is
// configured), opens the job store, starts the job agent and the media
// watcher. ctx bounds the start only; the node runs until Close.
func (n *Node) Start(ctx context.Context) (err error) {
	if n.Config == nil || n.Streams == nil {
		return fmt.Errorf("%w: Node needs Config and Streams", ErrConfig)
	}
	if n.Log == nil {
		n.Log = slog.Default()
	}
	n.relay = newRelayMetrics()
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	cfg := n.Config
	n.id = cfg.Node.ID
	if n.id == "" {
		n.id = defaultID()
	}
	natsURL, connect, err := n.connect(cfg)
	if err != nil {
		return err
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if n.store, err = jobs.OpenStore(openCtx, n.nc, jobs.StoreConfig{Replicas: cfg.NATS.Replicas, CheckLadder: ladder.Check, SourceCost: ladder.SourceCost, RequiredEncoder: ladder.RequiredEncoder}); err != nil {
		return err
	}
	// Stamped timed events are kept for late viewers and for a publisher
	// that takes a job over; without the stream they still flow live.
	if js, jerr := jetstream.New(n.nc); jerr == nil {
		if _, jerr = js.CreateOrUpdateStream(openCtx, relay.EventStreamConfig(max(cfg.NATS.Replicas, 1), relay.DefaultEventWindow)); jerr != nil {
			n.Log.Warn("timed events are not kept: creating their JetStream stream failed", "stream", relay.EventStream, "error", jerr)
		}
	}

	capacity, err := n.capacity(cfg)
	if err != nil {
		return err
	}
	// Each job plans its threads for its cost's part of this machine's
	// cores, so that a node full by capacity is not oversubscribed. The
	// cores are GOMAXPROCS's, which since Go 1.25 follows a cgroup CPU
	// limit (a container given 4 of 64 CPUs), not NumCPU's host count.
	shares := worker.Shares{Cores: runtime.GOMAXPROCS(0), Capacity: capacity}
	var runner jobs.Runner
	if *cfg.Node.Workers {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		n.workers = &worker.Supervisor{Exe: exe, NATSURL: natsURL, Connect: connect, Shares: shares, Log: n.Log}
		if e := n.embedded; e != nil {
			// Each worker gets a user limited to its own stream's media
			// subjects, not the node's token (jobs, every stream).
			n.workers.Credentials = func(job string) (bus.ConnectOptions, func(), error) {
				token, revoke, err := e.IssueWorkerToken(job)
				return bus.ConnectOptions{Token: token, InboxPrefix: bus.WorkerInboxPrefix(job)}, revoke, err
			}
		}
		runner = n.workers
	} else {
		runner = &worker.InProcess{NC: n.nc, Shares: shares, Log: n.Log}
	}
	gpus, encoders := hardware()
	n.agent = &jobs.Node{ID: n.id, Roles: []string{jobs.RoleTranscode, jobs.RoleServe}, Store: n.store,
		Runner: runner, Capacity: capacity, GPUs: gpus, Encoders: encoders, StartTimeout: cfg.Node.StartTimeout, Log: n.Log.With("node", n.id)}
	if err := n.agent.Start(ctx); err != nil {
		return err
	}
	watchCtx, stop := context.WithCancel(context.Background())
	n.cancel = stop
	pinned := map[string]bool{}
	for _, s := range cfg.Node.FollowStreams {
		pinned[s] = true
	}
	w := &mediaWatcher{agent: n.agent, nc: n.nc, streams: n.Streams, log: n.Log, metrics: n.relay,
		always: cfg.Node.Follow == config.FollowAlways, pinned: pinned, idle: cfg.Node.FollowIdle}
	n.wg.Go(func() { w.run(watchCtx) })
	return nil
}

// connect opens this node's NATS connection and returns what its workers
// need to open theirs.
func (n *Node) connect(cfg *config.Config) (url string, opts bus.ConnectOptions, err error) {
	if cfg.NATS.URL != "" {
		opts = bus.ConnectOptions{Name: "prism-" + n.id, CredsFile: cfg.NATS.Creds, NKeySeedFile: cfg.NATS.NKeySeed,
			Token: cfg.NATS.Token, TLSCAFile: cfg.NATS.TLSCA, TLSCertFile: cfg.NATS.TLSCert, TLSKeyFile: cfg.NATS.TLSKey, Log: n.Log}
		n.nc, err = bus.Connect(cfg.NATS.URL, opts)
		return cfg.NATS.URL, opts, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return "", opts, err
	}
	// Worker processes reach the server over loopback TCP; with jobs
	// in-process and no listen address, nothing outside needs it.
	dontListen := !*cfg.Node.Workers && cfg.NATS.Listen == "" && cfg.NATS.Cluster.Listen == ""
	n.embedded, err = bus.StartEmbedded(bus.EmbeddedConfig{
		Name: n.id, DataDir: cfg.DataDir, Listen: cfg.NATS.Listen, DontListen: dontListen,
		Cluster: bus.ClusterConfig{Name: cfg.NATS.Cluster.Name, Listen: cfg.NATS.Cluster.Listen, Routes: cfg.NATS.Cluster.Routes,
			Token: cfg.NATS.Cluster.Token},
		Clients: natsClients(cfg.NATS.Clients),
		Log:     n.Log.With("component", "nats"),
	})
	if err != nil {
		return "", opts, err
	}
	if n.nc, err = n.embedded.Connect(nats.Name("prism-" + n.id)); err != nil {
		return "", opts, err
	}
	return n.embedded.ClientURL(), bus.ConnectOptions{Token: n.embedded.Token()}, nil
}

// natsClients are nats.clients as the embedded server's client users.
func natsClients(cs []config.NATSClient) []bus.ClientUser {
	var out []bus.ClientUser
	for _, c := range cs {
		out = append(out, bus.ClientUser{Name: c.Name, Token: c.Token, Publish: c.Publish, Subscribe: c.Subscribe})
	}
	return out
}

// capacity is node.capacity when set (negative: serve only), else what
// `prism bench --calibrate` measured here, else a per-CPU guess.
func (n *Node) capacity(cfg *config.Config) (float64, error) {
	switch c := cfg.Node.Capacity; {
	case c < 0:
		return 0, nil
	case c > 0:
		return c, nil
	}
	calibrated, err := LoadCapacity(cfg.DataDir)
	if err != nil {
		return 0, err
	}
	if calibrated > 0 {
		n.Log.Info("node capacity from calibration", "pixels_per_second", calibrated, "file", CapacityFile(cfg.DataDir))
		return calibrated, nil
	}
	return jobs.DefaultCapacity(), nil
}

// hardware advertises what this node can encode with, from the GPU probe
// (trial opens), so jobs that need a GPU or an encoder land where it works.
func hardware() (gpus, encoders []string) {
	encoders = []string{"auto", "x264"}
	r := gpu.Probe()
	for _, d := range r.Devices {
		if d.Available {
			gpus = append(gpus, d.Type)
		}
	}
	for _, e := range r.Encoders {
		if e.Available && e.Name == "h264_nvenc" {
			encoders = append(encoders, "nvenc")
		}
	}
	return gpus, encoders
}

func defaultID() string {
	h, err := os.Hostname()
	if err != nil || pipeline.ValidStreamName(h) != nil {
		return fmt.Sprintf("node-%d", os.Getpid())
	}
	return h
}

// ID is the node's name in the cluster.
func (n *Node) ID() string { return n.id }

// Store is the cluster's job store.
func (n *Node) Store() *jobs.Store { return n.store }

// KnownJobs returns every job as this node's agent last saw it in the
// store, without a NATS round trip; ok is false until its view is loaded
// (jobs.Node.KnownJobs), or before Start.
func (n *Node) KnownJobs() (known []*jobs.Job, ok bool) {
	if n.agent == nil {
		return nil, false
	}
	return n.agent.KnownJobs()
}

// PlaySigned reports whether playing stream needs a credential: its job
// says play: signed. A stream this node does not know (yet) counts as
// signed when failClosed is set, so a check never lets through what it
// cannot look up.
func (n *Node) PlaySigned(stream string, failClosed bool) bool {
	if j, ok := n.agent.KnownJob(stream); ok {
		return j.Spec.Signed()
	}
	return failClosed
}

// WorkerPID returns the worker process of a job running on this node, or 0.
func (n *Node) WorkerPID(job string) int {
	if n.workers == nil {
		return 0
	}
	return n.workers.PID(job)
}

// SubmitStream submits a configured stream as a job that restarts with its
// input. A ladder file is sent inline: other nodes may not have the file.
// A job of that name with another spec (the configuration changed) is
// stopped and submitted again.
func (n *Node) SubmitStream(ctx context.Context, sc config.Stream) error {
	spec := jobs.Spec{ID: sc.Name, Input: sc.Input, Ladder: sc.Ladder, Restart: true, Realtime: sc.Realtime, Outputs: sc.Outputs, Play: sc.Play}
	for _, p := range sc.Publish {
		spec.Publish = append(spec.Publish, jobs.PublishTarget{URL: p.URL, Token: p.Token})
	}
	if ladder.IsPath(sc.Ladder) {
		data, err := os.ReadFile(sc.Ladder)
		if err != nil {
			return err
		}
		spec.LadderYAML = string(data)
	}
	_, err := n.store.Submit(ctx, spec)
	if errors.Is(err, jobs.ErrJobExists) {
		n.Log.Info("stream configuration changed: replacing its job", "stream", sc.Name)
		if _, err := n.store.Stop(ctx, sc.Name); err != nil {
			return err
		}
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			j, err := n.store.Get(ctx, sc.Name)
			if err == nil && j.State.Terminal() {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, err = n.store.Submit(ctx, spec, jobs.Replace()) // the configuration is the owner of its streams' ids
	}
	return err
}

// Close drains the node (its jobs go to other nodes), stops the media
// watcher, then disconnects. Safe after a failed Start.
func (n *Node) Close() {
	if n.agent != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := n.agent.Drain(ctx); err != nil {
			n.Log.Warn("drain", "error", err)
		}
		cancel()
		_ = n.agent.Close()
	}
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	if n.nc != nil {
		n.nc.Close()
	}
	if n.embedded != nil {
		n.embedded.Close()
	}
}
