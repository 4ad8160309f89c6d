//go:build tools

// Package deps pins the libraries the next issues build on (LL-HLS, WebRTC,
// NATS, metrics) so their versions are chosen once, in go.mod.
package deps

import (
	_ "github.com/bluenviron/gohlslib/v2"
	_ "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/pion/interceptor"
	_ "github.com/pion/webrtc/v4"
	_ "github.com/prometheus/client_golang/prometheus"
)
