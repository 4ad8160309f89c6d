package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prism-streaming/prism/config"
	"github.com/prism-streaming/prism/gpu"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue"
	"github.com/prism-streaming/prism/queue/ladderref"
)

// cluster is this node's part in job coordination: its NATS connection
// (an embedded server by default), the job store, the node agent that runs
// jobs, and the watcher that makes every running job's media available to
// this node's outputs through the stream registry, wherever it runs.
type cluster struct {
	log      *slog.Logger
	embedded *queue.Embedded // nil with an external cluster
	nc       *nats.Conn
	store    *queue.Store
	node     *queue.Node
	workers  *workerRunner // nil when jobs run in-process
	streams  *pipeline.Registry

	cancel context.CancelFunc
	wg     sync.WaitGroup // the media watcher
}

// followGone is how long a followed stream waits for a new publisher
// (failover, input restart) before its outputs give up on it.
const followGone = 60 * time.Second

func startCluster(ctx context.Context, cfg *config.Config, streams *pipeline.Registry, log *slog.Logger) (_ *cluster, err error) {
	c := &cluster{log: log, streams: streams}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	nodeID := cfg.Node.ID
	if nodeID == "" {
		nodeID = defaultNodeID()
	}
	var natsURL string
	var connect queue.ConnectOptions
	if cfg.NATS.URL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, err
		}
		// Worker processes reach the server over loopback TCP; with jobs
		// in-process and no listen address, nothing outside needs it.
		dontListen := !*cfg.Node.Workers && cfg.NATS.Listen == "" && cfg.NATS.Cluster.Listen == ""
		c.embedded, err = queue.StartEmbedded(queue.EmbeddedConfig{
			Name: nodeID, DataDir: cfg.DataDir, Listen: cfg.NATS.Listen, DontListen: dontListen,
			Cluster: queue.ClusterConfig{Name: cfg.NATS.Cluster.Name, Listen: cfg.NATS.Cluster.Listen, Routes: cfg.NATS.Cluster.Routes},
			Log:     log.With("component", "nats"),
		})
		if err != nil {
			return nil, err
		}
		if c.nc, err = c.embedded.Connect(nats.Name("prism-" + nodeID)); err != nil {
			return nil, err
		}
		natsURL = c.embedded.ClientURL()
		connect = queue.ConnectOptions{Token: c.embedded.Token()}
	} else {
		connect = queue.ConnectOptions{Name: "prism-" + nodeID, CredsFile: cfg.NATS.Creds, NKeySeedFile: cfg.NATS.NKeySeed,
			Token: cfg.NATS.Token, TLSCAFile: cfg.NATS.TLSCA, TLSCertFile: cfg.NATS.TLSCert, TLSKeyFile: cfg.NATS.TLSKey, Log: log}
		if c.nc, err = queue.Connect(cfg.NATS.URL, connect); err != nil {
			return nil, err
		}
		natsURL = cfg.NATS.URL
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if c.store, err = queue.OpenStore(openCtx, c.nc, queue.StoreConfig{Replicas: cfg.NATS.Replicas, CheckLadder: ladderref.Check}); err != nil {
		return nil, err
	}

	var runner queue.Runner
	if *cfg.Node.Workers {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		opts, _ := json.Marshal(connect)
		c.workers = &workerRunner{exe: exe, natsURL: natsURL, connect: string(opts), log: log}
		runner = c.workers
	} else {
		runner = &inProcessRunner{nc: c.nc, log: log}
	}
	capacity := cfg.Node.Capacity
	switch {
	case capacity == 0:
		// What `prism bench --calibrate` measured here, else a per-CPU guess.
		calibrated, err := loadCapacity(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		capacity = queue.DefaultCapacity()
		if calibrated > 0 {
			capacity = calibrated
			log.Info("node capacity from calibration", "pixels_per_second", calibrated, "file", capacityFile(cfg.DataDir))
		}
	case capacity < 0:
		capacity = 0 // serve only
	}
	gpus, encoders := hardware()
	c.node = &queue.Node{ID: nodeID, Roles: []string{queue.RoleTranscode, queue.RoleServe}, Store: c.store,
		Runner: runner, Capacity: capacity, GPUs: gpus, Encoders: encoders, Log: log.With("node", nodeID)}
	if err := c.node.Start(ctx); err != nil {
		return nil, err
	}
	watchCtx, stop := context.WithCancel(ctx)
	c.cancel = stop
	c.wg.Go(func() { c.watchMedia(watchCtx) })
	return c, nil
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

func defaultNodeID() string {
	h, err := os.Hostname()
	if err != nil || pipeline.ValidStreamName(h) != nil {
		return fmt.Sprintf("node-%d", os.Getpid())
	}
	return h
}

// submitStream submits a configured stream as a job that restarts with its
// input. A ladder file is sent inline: other nodes may not have the file.
// A job of that name with another spec (the configuration changed) is
// stopped and submitted again.
func (c *cluster) submitStream(ctx context.Context, sc config.Stream) error {
	spec := queue.JobSpec{ID: sc.Name, Input: sc.Input, Ladder: sc.Ladder, Restart: true,
		Outputs: []string{queue.OutputHLS, queue.OutputWebRTC}}
	for _, p := range sc.Publish {
		spec.Publish = append(spec.Publish, queue.PublishTarget{URL: p.URL, Token: p.Token})
	}
	if ladderref.IsPath(sc.Ladder) {
		data, err := os.ReadFile(sc.Ladder)
		if err != nil {
			return err
		}
		spec.LadderYAML = string(data)
	}
	_, err := c.store.Submit(ctx, spec)
	if errors.Is(err, queue.ErrJobExists) {
		c.log.Info("stream configuration changed: replacing its job", "stream", sc.Name)
		if _, err := c.store.Stop(ctx, sc.Name); err != nil {
			return err
		}
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			j, err := c.store.Get(ctx, sc.Name)
			if err == nil && (j.State == queue.StateStopped || j.State == queue.StateFailed) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, err = c.store.Submit(ctx, spec)
	}
	return err
}

// watchMedia follows the media of every running job into the stream
// registry, and takes streams out when their job stops.
func (c *cluster) watchMedia(ctx context.Context) {
	followed := map[string]*queue.FollowedJob{}
	defer func() {
		for id, f := range followed {
			c.streams.Remove(id)
			f.Close()
		}
	}()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The node's KV watchers keep every job's state here already.
		jobs, ok := c.node.KnownJobs()
		if !ok {
			continue // not loaded yet, or reloading after a reconnect: keep what is followed
		}
		active := map[string]bool{}
		for _, j := range jobs {
			id := j.Spec.ID
			switch j.State {
			case queue.StateRunning, queue.StateStarting, queue.StatePending:
				active[id] = true // a followed stream survives a restart or failover
			}
			if j.State != queue.StateRunning || followed[id] != nil {
				continue
			}
			f, err := queue.FollowStream(ctx, c.nc, id, followGone, c.log, queue.WithRequestTimeout(200*time.Millisecond))
			if err != nil {
				continue // its worker has not announced the stream yet
			}
			if err := c.streams.Add(id, f); err != nil {
				f.Close()
				continue
			}
			followed[id] = f
		}
		for id, f := range followed {
			ended := false
			select {
			case <-f.Done():
				ended = true
			default:
			}
			if ended || !active[id] {
				c.streams.Remove(id)
				f.Close()
				delete(followed, id)
			}
		}
	}
}

// close drains the node (its jobs go to other nodes), then disconnects.
func (c *cluster) close() {
	if c.node != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.node.Drain(ctx); err != nil {
			c.log.Warn("drain", "error", err)
		}
		cancel()
		_ = c.node.Close()
	}
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	if c.nc != nil {
		c.nc.Close()
	}
	if c.embedded != nil {
		c.embedded.Shutdown()
	}
}
