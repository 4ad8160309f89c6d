package config

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// fuzzMaxConfig bounds a fuzzed configuration file.
const fuzzMaxConfig = 1 << 20

// fuzzLocated is the shape of every line of a Parse error.
var fuzzLocated = regexp.MustCompile(`^fuzz\.yaml:[1-9][0-9]*: `)

// FuzzConfigParse feeds configuration files to Parse. It must never panic;
// it returns a configuration or an error, never both; an error is an
// ErrorList matching ErrInvalid, one located line ("fuzz.yaml:LINE: ...")
// per *Error; a configuration it accepts validates again. Seeds: the
// documented deploy/prism.yaml, as shipped and with its examples
// uncommented, and the shapes the other tests use.
func FuzzConfigParse(f *testing.F) {
	if data, err := os.ReadFile(deployedConfig); err == nil {
		f.Add(data)
		lines := strings.Split(string(data), "\n")
		for i, line := range lines {
			if m := commentedKey.FindStringSubmatch(line); m != nil {
				lines[i] = m[1] + m[2]
			}
		}
		f.Add([]byte(strings.Join(lines, "\n")))
	}
	for _, s := range []string{
		"http:\n  address: 127.0.0.1:9000\nstreams:\n  - name: cam1\n    input: rtsp://10.0.0.1/x\n",
		"streams:\n  - {name: a, input: x, outputs: [hls, webrtc], play: public}\n  - {name: a, input: y}\n",
		"streams:\n  - name: cam1\n    input: x\n    publish:\n      - {url: 'ftp://x', token: t}\n",
		"webrtc:\n  abr:\n    up_hold: 1ms\nhls:\n  cors_origins: []\n",
		"nats:\n  replicas: 9\n  url: nats://x:4222\n  listen: :4222\n",
		"data_dir: a\ndata_dir: b\n",
		"http: &h\n  address: :1\nnode:\n  <<: *h\n",
		"--- \n{}\n---\n{}\n",
		"\xef\xbb\xbfhttp: {address: ':8080'}\n",
		"streams: 3\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzMaxConfig {
			return
		}
		c, err := Parse("fuzz.yaml", data)
		if err == nil {
			if c == nil {
				t.Fatal("Parse returned neither a configuration nor an error")
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse accepted a configuration that Validate rejects: %v", err)
			}
			return
		}
		if c != nil {
			t.Fatalf("Parse returned both a configuration and an error: %v", err)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error does not match ErrInvalid: %v", err)
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %T is not a non-empty ErrorList: %v", err, err)
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != len(list) {
			t.Fatalf("%d errors in %d lines: %q", len(list), len(lines), err)
		}
		for i, e := range list {
			if e == nil || e.File != "fuzz.yaml" || e.Line < 1 {
				t.Fatalf("error %d is not located: %#v", i, e)
			}
			if !fuzzLocated.MatchString(lines[i]) {
				t.Fatalf("error line %q lacks fuzz.yaml:line", lines[i])
			}
		}
	})
}
