package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

// violations collects a connection's permission errors, which the server
// reports asynchronously.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		v.mu.Lock()
		v.errs = append(v.errs, err.Error())
		v.mu.Unlock()
	}
}

// seen reports whether a violation naming subject arrived.
func (v *violations) seen(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func TestWorkerTokenIsLimitedToItsStream(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	node := testutil.DialNATS(t, e, "node")
	token, revoke, err := e.IssueWorkerToken("cam")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.IssueWorkerToken("cam.>"); !errors.Is(err, bus.ErrEmbedded) {
		t.Fatalf("token for a wildcard stream: %v", err)
	}
	v := &violations{}
	w, err := nats.Connect(e.ClientURL(), nats.Token(token), nats.MaxReconnects(0), nats.ErrorHandler(v.handler))
	if err != nil {
		t.Fatalf("worker token: %v", err)
	}
	defer w.Close()

	// Allowed: publish its media and stats, answer its tracks request,
	// hear its ctl subject.
	media, err := node.SubscribeSync("media.cam.>")
	if err != nil || node.Flush() != nil {
		t.Fatal(err)
	}
	tracks, err := w.Subscribe("media.cam.tracks", func(m *nats.Msg) { _ = m.Respond([]byte("info")) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tracks.Unsubscribe() }()
	ctl, err := w.SubscribeSync("media.cam.ctl")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"media.cam.0", "media.cam.stats"} {
		if err := w.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if m, err := media.NextMsg(2 * time.Second); err != nil || m.Subject != subj {
			t.Fatalf("node got %v, %v; want %s", m, err, subj)
		}
	}
	if m, err := node.Request("media.cam.tracks", nil, 2*time.Second); err != nil || string(m.Data) != "info" {
		t.Fatalf("tracks request: %v, %v", m, err)
	}
	// Its events: in on events.cam, stamped out on events.cam.timed.
	in, err := w.SubscribeSync("events.cam")
	if err != nil || w.Flush() != nil {
		t.Fatal(err)
	}
	timed, err := node.SubscribeSync("events.cam.timed")
	if err != nil || node.Flush() != nil {
		t.Fatal(err)
	}
	if err := node.Publish("events.cam", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := in.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("events.cam: %v", err)
	}
	if err := w.Publish("events.cam.timed", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := timed.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("events.cam.timed: %v", err)
	}
	if err := node.Publish("media.cam.ctl", []byte("keyframe")); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("ctl: %v", err)
	}

	// Refused: another stream, JetStream, the jobs KV, and wider
	// subscriptions on its own stream.
	for _, subj := range []string{"media.other.0", "media.other.tracks", "$JS.API.INFO", "$KV.jobs.cam", "jobs.x",
		"events.other.timed", "$JS.API.CONSUMER.CREATE." + bus.EventStream + ".c.events.other.timed"} {
		if err := w.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{"media.other.0", "media.other.ctl", "media.cam.>", "media.cam.0", "$KV.>", "$JS.API.>", ">", "events.other", "events.>"} {
		if _, err := w.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "a permissions violation for every refused subject", func() bool {
		for _, s := range []string{"media.other.0", "media.other.tracks", "$JS.API.INFO", "$KV.jobs.cam", "jobs.x",
			"media.other.ctl", "media.cam.>", "media.cam.0", "$KV.>", "$JS.API.>", ">",
			"events.other.timed", "$JS.API.CONSUMER.CREATE." + bus.EventStream + ".c.events.other.timed", "events.other", "events.>"} {
			if !v.seen(s) {
				return false
			}
		}
		return true
	})
	if !w.IsConnected() {
		t.Fatal("violations closed the connection")
	}
	// Nothing the worker published elsewhere reached anyone.
	others, err := node.SubscribeSync(">")
	if err != nil || node.Flush() != nil {
		t.Fatal(err)
	}
	_ = w.Publish("media.other.1", []byte("x"))
	_ = w.Publish("media.cam.1", []byte("x")) // allowed: marks the end
	for {
		m, err := others.NextMsg(2 * time.Second)
		if err != nil {
			t.Fatalf("the allowed publish after a refused one: %v", err)
		}
		if m.Subject == "media.cam.1" {
			break
		}
		if strings.HasPrefix(m.Subject, "media.other") || strings.HasPrefix(m.Subject, "$KV") {
			t.Fatalf("a refused publish reached %s", m.Subject)
		}
	}
	js, _ := jetstream.New(w)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err == nil {
		t.Fatal("worker reached JetStream")
	}

	// The node's own token keeps full rights.
	njs, _ := jetstream.New(node)
	nctx, ncancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer ncancel()
	if _, err := njs.AccountInfo(nctx); err != nil {
		t.Fatalf("node JetStream: %v", err)
	}

	// A revoked token connects no more; a wrong one never did.
	revoke()
	revoke()
	for _, tok := range []string{token, token + "x", ""} {
		if nc, err := nats.Connect(e.ClientURL(), nats.Token(tok), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatalf("connected with token %q", tok)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("token %q: %v, want an authorization error", tok, err)
		}
	}
}
