package bus_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

// TestClientUser: a data pipeline's token publishes events and reads the
// stamped events and actions, asks with requests on its own inbox, and
// reaches nothing else: no media, no jobs, no JetStream.
func TestClientUser(t *testing.T) {
	testutil.LeakCheck(t)
	const token = "pipeline-secret-0123"
	e := testutil.StartNATS(t, bus.EmbeddedConfig{Clients: []bus.ClientUser{{Name: "pipeline", Token: token}}})
	node := testutil.DialNATS(t, e, "node")

	if _, err := nats.Connect(e.ClientURL(), nats.Token(token+"x"), nats.MaxReconnects(0)); err == nil {
		t.Fatal("a wrong client token connected")
	}
	v := &violations{}
	c, err := nats.Connect(e.ClientURL(), nats.Token(token), nats.MaxReconnects(0), nats.ErrorHandler(v.handler),
		nats.CustomInboxPrefix(bus.ClientInboxPrefix("pipeline")))
	if err != nil {
		t.Fatalf("client token: %v", err)
	}
	defer c.Close()

	// events.<stream> in, answered as the worker's stamper answers.
	in, err := node.Subscribe("events.cam", func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Unsubscribe() }()
	if err := node.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := c.Request("events.cam", []byte(`{"class":"bid"}`), 5*time.Second)
	if err != nil || string(r.Data) != `{"ok":true}` {
		t.Fatalf("request on events.cam: %v %v", r, err)
	}

	// events.<stream>.timed and actions.<stream> out.
	for _, subj := range []string{"events.cam.timed", "actions.cam"} {
		sub, err := c.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := node.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		_ = sub.Unsubscribe()
	}

	// Nothing else.
	for _, subj := range []string{"media.cam.0", "$JS.API.STREAM.LIST", "actions.cam"} {
		_ = c.Publish(subj, []byte("x"))
	}
	for _, subj := range []string{"media.cam.0", "events.cam", "$KV.prism_jobs.>", "_INBOX.cam.>"} {
		_, _ = c.SubscribeSync(subj)
	}
	_ = c.Flush()
	for _, subj := range []string{"media.cam.0", "$JS.API.STREAM.LIST", "actions.cam", "events.cam", "$KV.prism_jobs.>", "_INBOX.cam.>"} {
		testutil.Eventually(t, 5*time.Second, "a permission violation on "+subj, func() bool { return v.seen(subj) })
	}
}

func TestClientUserRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		clients []bus.ClientUser
	}{
		{"short token", []bus.ClientUser{{Name: "p", Token: "short"}}},
		{"dotted name", []bus.ClientUser{{Name: "a.b", Token: "0123456789abcdef"}}},
		{"twice", []bus.ClientUser{{Name: "p", Token: "0123456789abcdef"}, {Name: "p", Token: "fedcba9876543210"}}},
		{"same token", []bus.ClientUser{{Name: "p", Token: "0123456789abcdef"}, {Name: "q", Token: "0123456789abcdef"}}},
		{"bad subject", []bus.ClientUser{{Name: "p", Token: "0123456789abcdef", Publish: []string{"events.>.x"}}}},
	} {
		_, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: t.TempDir(), Clients: c.clients})
		if !errors.Is(err, bus.ErrEmbedded) {
			t.Errorf("%s: %v, want ErrEmbedded", c.name, err)
		}
	}
}
