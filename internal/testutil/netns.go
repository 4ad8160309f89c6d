package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// NetNS is a network namespace the test made, joined to this one by a veth
// pair: HostIP is this side's address, PeerIP the namespace's. A client run
// with Command reaches the host from a non-loopback address, as a user on
// another machine would.
type NetNS struct {
	Name           string
	HostIP, PeerIP string
}

var netnsSeq atomic.Uint32

// StartNetNS creates the namespace and the veth pair (/30 out of
// 10.231.0.0/16, private to this machine), removed by the test's cleanup.
// It skips the test where that cannot be done (not root, no ip command).
func StartNetNS(t testing.TB) *NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	// A /30 picked at random (and per call) keeps parallel test processes
	// apart: x.y.z.1 this side, x.y.z.2 the namespace.
	third, fourth := int(b[1]), (int(b[0])+int(netnsSeq.Add(1)))%63*4
	ns := &NetNS{Name: "prism-" + id, HostIP: fmt.Sprintf("10.231.%d.%d", third, fourth+1), PeerIP: fmt.Sprintf("10.231.%d.%d", third, fourth+2)}
	host, peer := "pv"+id+"h", "pv"+id+"p"
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	t.Cleanup(func() {
		_ = run("link", "del", host)
		_ = run("netns", "del", ns.Name)
	})
	for _, args := range [][]string{
		{"netns", "add", ns.Name},
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns.Name},
		{"addr", "add", ns.HostIP + "/30", "dev", host},
		{"link", "set", host, "up"},
		{"-n", ns.Name, "addr", "add", ns.PeerIP + "/30", "dev", peer},
		{"-n", ns.Name, "link", "set", peer, "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			t.Skipf("cannot set up a network namespace here: %v", err)
		}
	}
	return ns
}

// Command runs name with args inside the namespace.
func (ns *NetNS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}
