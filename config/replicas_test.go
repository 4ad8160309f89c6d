package config

import "testing"

// TestReplicasFollowTheCluster: a file naming a NATS cluster (url or
// cluster.listen) gets replicas 3 unless it sets them; without one, 1.
func TestReplicasFollowTheCluster(t *testing.T) {
	for _, ca := range []struct {
		yaml string
		want int
	}{
		{"nats:\n  url: nats://a:4222,nats://b:4222\n", 3},
		{"nats:\n  cluster:\n    name: p\n    listen: 127.0.0.1:6222\n", 3},
		{"nats:\n  url: nats://a:4222\n  replicas: 1\n", 1},
		{"http:\n  address: :8080\n", 1},
	} {
		c, err := Parse("test.yaml", []byte(ca.yaml))
		if err != nil {
			t.Fatalf("%q: %v", ca.yaml, err)
		}
		if c.NATS.Replicas != ca.want {
			t.Errorf("%q: replicas %d, want %d", ca.yaml, c.NATS.Replicas, ca.want)
		}
	}
}
