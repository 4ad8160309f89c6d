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
	// HostDev and PeerDev are the veth ends: HostDev's egress carries what
	// this side sends into the namespace, PeerDev's (inside it) the way back.
	HostDev, PeerDev string
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
	ns.HostDev, ns.PeerDev = host, peer
	run := ipCommand
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

// ipCommand runs iproute2's ip with args.
func ipCommand(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Command runs name with args inside the namespace.
func (ns *NetNS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Shape puts a traffic-control queueing discipline on egress of dev (HostDev
// or PeerDev), replacing any: qdisc is the rest of a `tc qdisc replace ...
// root` command, e.g. "netem loss 3%". Rate limits need a class, see
// Limit. The test's cleanup removes the namespace and both ends.
func (ns *NetNS) Shape(dev string, qdisc ...string) error {
	return ns.tc(dev, append([]string{"qdisc", "replace", "dev", dev, "root"}, qdisc...)...)
}

// Limit caps egress of dev at kbit kilobits per second with an htb class
// whose FIFO holds queue packets: 1000 is a deep buffer (a cable modem's:
// no loss until it is full, seconds of delay), 50 a shallow one.
func (ns *NetNS) Limit(dev string, kbit, queue int) error {
	rate := fmt.Sprintf("%dkbit", kbit)
	_ = ns.Unshape(dev) // htb cannot replace an htb in place
	for _, args := range [][]string{
		{"qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10"},
		{"class", "replace", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", rate, "ceil", rate},
		{"qdisc", "replace", "dev", dev, "parent", "1:10", "handle", "10:", "pfifo", "limit", fmt.Sprint(queue)},
	} {
		if err := ns.tc(dev, args...); err != nil {
			return err
		}
	}
	return nil
}

// Lift raises the rate of Limit's class on dev to 10 Gbit/s: the limit
// goes as on a real link, whose queue drains (removing the qdisc would drop
// everything queued).
func (ns *NetNS) Lift(dev string) error {
	return ns.tc(dev, "class", "change", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit", "ceil", "10gbit")
}

// Unshape removes what Shape or Limit put on dev.
func (ns *NetNS) Unshape(dev string) error {
	return ns.tc(dev, "qdisc", "del", "dev", dev, "root")
}

// tc runs tc for dev: in this namespace for HostDev, in the test's for
// PeerDev.
func (ns *NetNS) tc(dev string, args ...string) error {
	cmd := exec.Command("tc", args...)
	if dev == ns.PeerDev {
		cmd = ns.Command("tc", args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
