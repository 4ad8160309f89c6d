package webrtc

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// Sizes of the batching writer's ring. A slot holds one datagram: SRTP
// packets stay near 1250 bytes (rtpPayloadMTU), DTLS and SCTP below
// pion's 1200-byte MTU; anything larger is sent on its own.
const (
	batchSlots = 8192 // one frame's packets to hundreds of viewers at once
	// batchWait: a writer that finds the ring full waits this long for
	// room (a burst being sent) before it drops the datagram.
	batchWait     = 20 * time.Millisecond
	batchSlotSize = 1500
	batchMax      = 64 // datagrams per sendmmsg
)

// batchConn is the shared UDP socket as the ICE mux sees it: writes are
// copied into a ring and a flusher goroutine sends them with sendmmsg
// (x/net's WriteBatch), many per system call. A system call costs more
// than pion's whole per-packet work on this kind of machine (about 5 µs per
// sendto against 2 µs per datagram in batches of 32, loopback, 2-core VM),
// and every viewer's packets go through this one socket, so batches form
// by themselves under load: while the flusher sends, the viewers'
// goroutines queue the next ones. Order is kept. Reads go to the socket
// directly.
//
// Writers never wait long. A full ring is normally a burst (one frame to
// every viewer at once) that the flusher is sending, so a writer waits up
// to batchWait for room; if the ring stays full (the server's own egress
// is backed up: a shaper on its interface, a saturated uplink) the
// datagram is dropped, as a full router queue would drop it, and the viewer's
// feedback reports it lost: one viewer's congested path must not stall the
// sessions of all the others, and the stalled viewer's estimator would see
// nothing until the queue drained.
type batchConn struct {
	*net.UDPConn
	pc    *ipv4.PacketConn
	wake  chan struct{} // signalled (without blocking) when a datagram is queued
	space chan struct{} // signalled (without blocking) when the flusher freed slots
	done  chan struct{} // closed when the flusher returned

	mu      sync.Mutex
	head, n int // queued datagrams: slots head..head+n-1 (mod batchSlots)
	closed  bool
	// Per slot, built once: the buffer, the destination (changed in
	// place) and the message that points at both.
	bufs  []byte
	addrs []net.UDPAddr
	msgs  []ipv4.Message

	dropped atomic.Uint64 // datagrams dropped on a full ring
	errors  atomic.Uint64 // datagrams the kernel refused
}

// newBatchConn wraps an IPv4 UDP socket; other sockets are returned as
// they are.
func newBatchConn(pc net.PacketConn) net.PacketConn {
	c, ok := pc.(*net.UDPConn)
	if !ok {
		return pc // e.g. a virtual network in tests
	}
	if a, ok := c.LocalAddr().(*net.UDPAddr); !ok || a.IP.To4() == nil {
		return pc
	}
	b := &batchConn{
		UDPConn: c, pc: ipv4.NewPacketConn(c),
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1), done: make(chan struct{}),
		bufs:  make([]byte, batchSlots*batchSlotSize),
		addrs: make([]net.UDPAddr, batchSlots),
		msgs:  make([]ipv4.Message, batchSlots),
	}
	for i := range b.msgs {
		b.addrs[i].IP = make(net.IP, 4)
		b.msgs[i].Buffers = [][]byte{b.bufs[i*batchSlotSize : (i+1)*batchSlotSize]}
		b.msgs[i].Addr = &b.addrs[i]
	}
	go b.flush()
	return b
}

// ReadFromAddrPort and WriteToAddrPort make pion's UDP mux use the
// allocation-free netip.AddrPort path (it only adapts a bare *net.UDPConn
// by itself).
func (b *batchConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	return b.ReadFromUDPAddrPort(p)
}

// WriteTo queues p for addr.
func (b *batchConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.InvalidAddrError("not a UDP address")}
	}
	return b.WriteToAddrPort(p, a.AddrPort())
}

// WriteToAddrPort queues p for addr; p is copied, as pion reuses it.
func (b *batchConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	ip := addr.Addr().Unmap()
	if len(p) > batchSlotSize || !ip.Is4() {
		return b.WriteToUDPAddrPort(p, addr) // rare: sent at once, out of the ring's order
	}
	b.mu.Lock()
	var deadline *time.Timer
	for b.n == batchSlots && !b.closed {
		b.mu.Unlock()
		if deadline == nil {
			deadline = time.NewTimer(batchWait)
			defer deadline.Stop()
		}
		select {
		case <-b.space:
		case <-deadline.C:
			b.dropped.Add(1)
			return len(p), nil // lost on the way, as far as the sender can tell
		}
		b.mu.Lock()
	}
	if b.closed {
		b.mu.Unlock()
		return 0, net.ErrClosed
	}
	i := (b.head + b.n) % batchSlots
	buf := b.bufs[i*batchSlotSize : (i+1)*batchSlotSize]
	b.msgs[i].Buffers[0] = buf[:copy(buf, p)]
	a4 := ip.As4()
	copy(b.addrs[i].IP, a4[:])
	b.addrs[i].Port = int(addr.Port())
	b.n++
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// flush sends queued datagrams until the socket is closed.
func (b *batchConn) flush() {
	defer close(b.done)
	for {
		b.mu.Lock()
		for b.n == 0 {
			if b.closed {
				b.mu.Unlock()
				return
			}
			b.mu.Unlock()
			<-b.wake
			b.mu.Lock()
		}
		// One contiguous run of the ring; writers fill other slots
		// meanwhile (n still counts these, so none is reused).
		k := min(b.n, batchMax, batchSlots-b.head)
		from := b.head
		b.mu.Unlock()
		for sent := 0; sent < k; {
			n, err := b.pc.WriteBatch(b.msgs[from+sent:from+k], 0)
			if errors.Is(err, net.ErrClosed) {
				b.forget()
				return
			}
			if err != nil && n <= 0 {
				b.errors.Add(1) // the first datagram failed (e.g. unreachable): skip it
				n = 1
			}
			sent += n
		}
		b.mu.Lock()
		b.head = (b.head + k) % batchSlots
		b.n -= k
		b.mu.Unlock()
		select {
		case b.space <- struct{}{}:
		default:
		}
	}
}

// forget drops what is queued once the socket is gone.
func (b *batchConn) forget() {
	b.mu.Lock()
	b.closed, b.n = true, 0
	b.mu.Unlock()
}

// Close stops the flusher after what is queued was sent, then closes the
// socket.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	<-b.done
	return b.UDPConn.Close()
}
