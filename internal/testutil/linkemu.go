//go:build linux

package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// EmulatedLink joins a network namespace to this one through two TUN
// devices and a user-space delay line: every IP packet crosses this
// process, which delays and drops it as set (SetDelay, SetLoss). It stands
// in for netem where the kernel lacks it (sch_netem is not built into every
// kernel; this machine's has htb, tbf and pfifo only).
type EmulatedLink struct {
	NS *NetNS // its HostDev and PeerDev are the TUN devices

	toPeer, toHost direction
	wg             sync.WaitGroup
	files          []*os.File
}

// direction is one way of the link.
type direction struct {
	delay atomic.Int64 // ns
	loss  atomic.Uint64
	sent  atomic.Uint64
	lost  atomic.Uint64
}

// StartEmulatedNetNS creates a namespace linked by an EmulatedLink (a /30
// out of 10.232.0.0/16), removed by the test's cleanup. It skips where that
// cannot be done (not root, no TUN).
func StartEmulatedNetNS(t testing.TB) *EmulatedLink {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	third, fourth := int(b[1]), (int(b[0])+int(netnsSeq.Add(1)))%63*4
	ns := &NetNS{Name: "prism-" + id, HostIP: fmt.Sprintf("10.232.%d.%d", third, fourth+1),
		PeerIP: fmt.Sprintf("10.232.%d.%d", third, fourth+2), HostDev: "pt" + id + "h", PeerDev: "pt" + id + "p"}
	l := &EmulatedLink{NS: ns}
	run := ipCommand
	t.Cleanup(func() {
		l.close()
		_ = run("netns", "del", ns.Name)
	})
	if err := run("netns", "add", ns.Name); err != nil {
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	// Both devices are attached here, then one moves into the namespace;
	// the open file follows it.
	host, err := openTUN(ns.HostDev)
	if err != nil {
		t.Skipf("no TUN device here: %v", err)
	}
	peer, err := openTUN(ns.PeerDev)
	if err != nil {
		_ = host.Close()
		t.Skipf("no TUN device here: %v", err)
	}
	l.files = []*os.File{host, peer}
	for _, args := range [][]string{
		{"addr", "add", ns.HostIP, "peer", ns.PeerIP, "dev", ns.HostDev},
		{"link", "set", ns.HostDev, "up"},
		{"link", "set", ns.PeerDev, "netns", ns.Name},
		{"-n", ns.Name, "addr", "add", ns.PeerIP, "peer", ns.HostIP, "dev", ns.PeerDev},
		{"-n", ns.Name, "link", "set", ns.PeerDev, "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			t.Fatalf("emulated link: %v", err)
		}
	}
	l.wg.Add(2)
	go l.shuttle(host, peer, &l.toPeer)
	go l.shuttle(peer, host, &l.toHost)
	return l
}

func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	// Non-blocking, so the runtime poller reads it and Close wakes a reader.
	return os.NewFile(uintptr(fd), name), nil
}

// SetDelay sets the one-way delay of both directions (RTT = 2 × d).
func (l *EmulatedLink) SetDelay(d time.Duration) {
	l.toPeer.delay.Store(int64(d))
	l.toHost.delay.Store(int64(d))
}

// SetLoss drops packets towards the namespace with probability p (0..1).
func (l *EmulatedLink) SetLoss(p float64) {
	l.toPeer.loss.Store(uint64(p * (1 << 32)))
}

// Dropped is how many packets towards the namespace were dropped so far.
func (l *EmulatedLink) Dropped() uint64 { return l.toPeer.lost.Load() }

type delayed struct {
	due time.Time
	pkt []byte
}

// shuttle moves packets from in to out, delayed and dropped as d says. The
// delay is the same for all packets at a time, so a FIFO keeps order.
func (l *EmulatedLink) shuttle(in, out *os.File, d *direction) {
	defer l.wg.Done()
	queue := make(chan delayed, 8192)
	var writer sync.WaitGroup
	writer.Go(func() { // ends when queue closes
		for p := range queue {
			if wait := time.Until(p.due); wait > 0 {
				time.Sleep(wait) // a delay line: holding each packet is its job
			}
			_, _ = out.Write(p.pkt)
		}
	})
	defer writer.Wait()
	defer close(queue)
	buf := make([]byte, 65536)
	for {
		n, err := in.Read(buf)
		if err != nil {
			return // closed
		}
		d.sent.Add(1)
		if loss := d.loss.Load(); loss > 0 && uint64(mrand.Uint32()) < loss {
			d.lost.Add(1)
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		select {
		case queue <- delayed{due: time.Now().Add(time.Duration(d.delay.Load())), pkt: pkt}:
		default: // the line is full: dropped, as a full queue would
			d.lost.Add(1)
		}
	}
}

func (l *EmulatedLink) close() {
	for _, f := range l.files {
		_ = f.Close()
	}
	l.wg.Wait()
}
