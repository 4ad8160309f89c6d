package bus_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

func TestEmbeddedListensOnLoopbackWithToken(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	if !strings.HasPrefix(e.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(e.ClientURL(), ":4222") {
		t.Fatalf("ClientURL %q: want loopback on a random port", e.ClientURL())
	}
	if len(e.Token()) < 32 {
		t.Fatalf("token %q: want a random one", e.Token())
	}

	// Worker processes connect over TCP with the token...
	nc := testutil.DialNATS(t, e, "worker")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("JetStream over TCP: %v", err)
	}
	// ...and nobody else.
	if nc, err := nats.Connect(e.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected without the token")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("without token: %v, want an authorization error", err)
	}

	// In-process connection.
	ip, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer ip.Close()
	if err := ip.Publish("x", []byte("y")); err != nil || ip.FlushTimeout(time.Second) != nil {
		t.Fatalf("in-process publish: %v", err)
	}
	e.Close()
	e.Close() // idempotent
}

func TestEmbeddedDontListen(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{DontListen: true})
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("JetStream in-process: %v", err)
	}
	if addr := e.Server().Addr(); addr != nil {
		t.Fatalf("listening on %v with DontListen", addr)
	}
}

func TestEmbeddedStartErrors(t *testing.T) {
	testutil.LeakCheck(t)
	if _, err := bus.StartEmbedded(bus.EmbeddedConfig{}); !errors.Is(err, bus.ErrEmbedded) || !strings.Contains(err.Error(), "DataDir") {
		t.Fatalf("no DataDir: %v", err)
	}
	if _, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:http"}); !errors.Is(err, bus.ErrEmbedded) {
		t.Fatalf("bad Listen: %v", err)
	}
	if _, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: t.TempDir(), Cluster: bus.ClusterConfig{Listen: "127.0.0.1:0"}}); !errors.Is(err, bus.ErrEmbedded) || !strings.Contains(err.Error(), "Cluster.Name") {
		t.Fatalf("cluster without name: %v", err)
	}

	// A store directory that cannot be created: JetStream fails to start.
	// nats-server reports that through Fatalf, which must not exit this
	// process, and bus.StartEmbedded must say why.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: file, Log: testutil.Logger(t)})
	if !errors.Is(err, bus.ErrEmbedded) || !strings.Contains(err.Error(), "JetStream") {
		t.Fatalf("unusable store: %v", err)
	}
	t.Logf("unusable store: %v", err)

	// A port in use.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = bus.StartEmbedded(bus.EmbeddedConfig{DataDir: t.TempDir(), Listen: l.Addr().String(), ReadyTimeout: 2 * time.Second, Log: testutil.Logger(t)})
	if !errors.Is(err, bus.ErrEmbedded) {
		t.Fatalf("port in use: %v", err)
	}
	t.Logf("port in use: %v", err)
}
