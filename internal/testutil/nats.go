package testutil

import (
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/queue/bus"
)

// TinyLadder is one 320x180 rung with audio: cheap enough for the 2-core
// test machine, real enough to go through every stage.
const TinyLadder = `name: tiny
gop: 1s
rungs:
  - {name: 180p, height: 180, bitrate: 200k, preset: ultrafast}
audio: {aac: {bitrate: 64k}, opus: {bitrate: 32k}}
`

// TinyCost is TinyLadder's nominal cost: 320x180 at 30 fps.
const TinyCost = 320 * 180 * 30

// TinyInput is a live-like lavfi source matching TinyLadder.
const TinyInput = "lavfi:testsrc2=size=320x180:rate=30[out0];sine=sample_rate=48000[out1]"

// StartNATS starts an embedded server that the test shuts down.
func StartNATS(t testing.TB, cfg bus.EmbeddedConfig) *bus.Embedded {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e, err := bus.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// DialNATS opens a TCP client connection to e, closed by the test.
func DialNATS(t testing.TB, e *bus.Embedded, name string) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(e.ClientURL(), bus.ConnectOptions{Name: name, Token: e.Token(), Log: Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartNATSCluster starts n embedded servers routed to each other, with
// JetStream clustered (so streams use 3 replicas).
func StartNATSCluster(t testing.TB, n int) []*bus.Embedded {
	t.Helper()
	servers, err := bus.StartLocalCluster(n, t.TempDir(), "cluster-token")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		t.Cleanup(s.Close)
	}
	return servers
}
