package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	c, err := Parse("prism.yaml", []byte("http:\n  address: 127.0.0.1:9000\nstreams:\n  - name: cam1\n    input: rtsp://10.0.0.1/x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Address != "127.0.0.1:9000" || c.Streams[0].Ladder != "default" || !*c.Streams[0].Realtime {
		t.Errorf("%+v", c)
	}
	if c, err := Parse("partial.yaml", []byte("webrtc:\n  udp_port: 9000\n")); err != nil || c.WebRTC.UDPPort != 9000 || c.WebRTC.MaxSessions != 500 {
		t.Errorf("webrtc defaults under a partial section: %v %+v", err, c.WebRTC)
	}
	if c, err := Parse("node.yaml", []byte("node:\n  start_timeout: 45s\n")); err != nil || c.Node.StartTimeout != 45*time.Second {
		t.Errorf("node.start_timeout: %v %+v", err, c.Node)
	}
	if c, err := Parse("follow.yaml", []byte("node:\n  follow: always\n  follow_idle: 5s\n  follow_streams: [a, b]\n")); err != nil ||
		c.Node.Follow != FollowAlways || c.Node.FollowIdle != 5*time.Second || len(c.Node.FollowStreams) != 2 {
		t.Errorf("node.follow: %v %+v", err, c.Node)
	}
	if c, err := Parse("empty.yaml", nil); err != nil || c.HTTP.Address != ":8080" || c.Node.StartTimeout != 30*time.Second ||
		c.Node.Follow != FollowOnDemand || c.Node.FollowIdle != 30*time.Second {
		t.Errorf("empty file: %v %+v", err, c)
	}
}

func TestErrorsNameFileLineField(t *testing.T) {
	for _, ca := range []struct{ name, yaml, want string }{
		{"unknown key", "http:\n  adress: x\n", `prism.yaml:2: http.adress: unknown field "adress"`},
		{"duplicate key", "data_dir: a\ndata_dir: b\n", "prism.yaml:2: "},
		{"wrong type", "streams: 3\n", "prism.yaml:1: "},
		{"missing input", "streams:\n  - name: a\n", "prism.yaml:2: streams[0].input: is required"},
		{"bad name", "streams:\n  - name: a\n    input: x\n  - name: ../b\n    input: y\n", `prism.yaml:4: streams[1].name: "../b": use letters`},
		{"duplicate name", "streams:\n  - {name: a, input: x}\n  - {name: a, input: y}\n", `prism.yaml:3: streams[1].name: "a" is already used by streams[0]`},
		{"output section", "hls:\n  part_target: 10ms\n", "prism.yaml:2: hls.part_target: must be between 100ms and 2s"},
		{"webrtc section", "webrtc:\n  udp_port: 70000\n", "prism.yaml:2: webrtc.udp_port: must be 0..65535"},
		{"unknown output", "streams:\n  - name: a\n    input: x\n    outputs: [hls, rtmp]\n", `prism.yaml:4: streams[0].outputs[1]: "rtmp" is not "hls" or "webrtc"`},
		{"bad duration", "hls:\n  ready_timeout: A\n", `prism.yaml:2: hls.ready_timeout: time: invalid duration "A"`},
		{"start timeout", "node:\n  start_timeout: 100ms\n", "prism.yaml:2: node.start_timeout: 100ms: between 1s and 10m"},
		{"follow", "node:\n  follow: lazy\n", `prism.yaml:2: node.follow: "lazy" is not "on_demand" or "always"`},
		{"follow idle", "node:\n  follow: always\n  follow_idle: 10ms\n", "prism.yaml:3: node.follow_idle: 10ms: between 1s and 1h"},
		{"follow streams", "node:\n  follow_streams:\n    - a\n    - ../b\n", `prism.yaml:4: node.follow_streams[1]: "../b": use letters`},
		{"tls half set", "http:\n  tls_cert: c.pem\n", "prism.yaml:2: http.tls_cert: tls_cert and tls_key must be set together"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			_, err := Parse("prism.yaml", []byte(ca.yaml))
			if err == nil || !strings.HasPrefix(err.Error(), ca.want) || !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want prefix %q", err, ca.want)
			}
		})
	}
}

// TestSectionErrorsAreLocated: the output sections name fields relative to
// themselves; the configuration puts them under the section's key, at the
// line of the field.
func TestSectionErrorsAreLocated(t *testing.T) {
	_, err := Parse("prism.yaml", []byte("webrtc:\n  abr:\n    up_hold: 1ms\nhls:\n  cors_origins: []\n"))
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 2 {
		t.Fatalf("got %v, want an ErrorList of 2", err)
	}
	want := []Error{
		{File: "prism.yaml", Line: 3, Field: "webrtc.abr.up_hold", Msg: "must be 100ms..1m, got 1ms"},
		{File: "prism.yaml", Line: 5, Field: "hls.cors_origins", Msg: `must list at least one origin ("*" allows every origin)`},
	}
	for i := range want {
		if *list[i] != want[i] {
			t.Errorf("error %d = %+v, want %+v", i, *list[i], want[i])
		}
	}
	// Built in code (flags over the defaults): fields only.
	c := New()
	c.HLS.PartTarget = time.Millisecond
	if err, want := c.Validate(), "hls.part_target: must be between 100ms and 2s, got 1ms"; err == nil || err.Error() != want || !errors.Is(err, ErrInvalid) {
		t.Errorf("Validate = %v, want %q", err, want)
	}
}

func TestClusterTokenLength(t *testing.T) {
	c := New()
	c.NATS.Cluster = NATSCluster{Name: "prism", Listen: "0.0.0.0:6222", Token: "short"}
	if err, want := c.Validate(), "nats.cluster.token: at least 16 characters"; err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %q", err, want)
	}
	c.NATS.Cluster.Token = "0123456789abcdef"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate with a 16-character token = %v", err)
	}
}

// TestNATSClientsErrorsAreLocated: nats.clients mistakes name the line of
// the field at fault.
func TestNATSClientsErrorsAreLocated(t *testing.T) {
	yaml := "nats:\n  clients:\n    - name: a.b\n      token: short\n      publish: [\"events.>.x\"]\n"
	_, err := Parse("prism.yaml", []byte(yaml))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %v, want an ErrorList", err)
	}
	lines := map[string]int{}
	for _, e := range list {
		lines[e.Field] = e.Line
	}
	want := map[string]int{"nats.clients": 2, "nats.clients[0].name": 3, "nats.clients[0].token": 4, "nats.clients[0].publish[0]": 5}
	for f, l := range want {
		if lines[f] != l {
			t.Errorf("%s at line %d, want %d (all: %v)", f, lines[f], l, err)
		}
	}
	ok := "nats:\n  listen: 127.0.0.1:4222\n  clients:\n    - name: pipeline\n      token: 0123456789abcdef\n"
	if _, err := Parse("prism.yaml", []byte(ok)); err != nil {
		t.Errorf("a valid client: %v", err)
	}
	ext := "nats:\n  url: nats://a:4222\n  clients:\n    - name: pipeline\n      token: 0123456789abcdef\n"
	if _, err := Parse("prism.yaml", []byte(ext)); err == nil || !strings.Contains(err.Error(), "external cluster") {
		t.Errorf("clients with an external cluster: %v", err)
	}
}
