package webrtc

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
)

// dropWhenFullConn is the shared WebRTC UDP socket with writes that never
// wait. A plain *net.UDPConn write parks when the socket's send buffer is
// full, which happens when the server's own egress queue backs up (a tc
// shaper on the server's interface, a saturated uplink): every session
// shares the socket, so one viewer's congested path would stall all of
// them, and the stalled viewer's bandwidth estimator would see nothing
// until the queue drained. A full buffer drops the packet instead, as a
// full router queue would; the viewer's feedback reports it lost.
type dropWhenFullConn struct {
	*net.UDPConn
	raw syscall.RawConn

	mu     sync.Mutex // one write at a time: the fields below are its arguments
	buf    []byte
	sa4    syscall.SockaddrInet4
	sa6    syscall.SockaddrInet6
	v6     bool
	n      int
	err    error
	sendFn func(fd uintptr) bool // c.send, bound once so a write allocates nothing

	dropped atomic.Uint64
}

func newDropWhenFullConn(c *net.UDPConn) (*dropWhenFullConn, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	d := &dropWhenFullConn{UDPConn: c, raw: raw}
	d.sendFn = d.send
	return d, nil
}

func (c *dropWhenFullConn) send(fd uintptr) bool {
	var sa syscall.Sockaddr = &c.sa4
	if c.v6 {
		sa = &c.sa6
	}
	err := syscall.Sendto(int(fd), c.buf, 0, sa)
	switch {
	case err == nil:
		c.n = len(c.buf)
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.ENOBUFS):
		c.dropped.Add(1)
		c.n = len(c.buf) // dropped on the way, as far as the sender can tell
	default:
		c.err = err
	}
	return true // never wait for the socket to drain
}

// WriteToAddrPort implements ice.AddrPortReaderWriter (pion's allocation-free path).
func (c *dropWhenFullConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ip := addr.Addr().Unmap()
	c.v6 = ip.Is6()
	if c.v6 {
		c.sa6 = syscall.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16()}
	} else {
		c.sa4 = syscall.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	}
	c.buf, c.n, c.err = b, 0, nil
	if err := c.raw.Write(c.sendFn); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: err}
	}
	c.buf = nil
	if c.err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: c.err}
	}
	return c.n, nil
}

// ReadFromAddrPort implements ice.AddrPortReaderWriter.
func (c *dropWhenFullConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.ReadFromUDPAddrPort(b)
}

// WriteTo implements net.PacketConn.
func (c *dropWhenFullConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.InvalidAddrError("not a UDP address")}
	}
	return c.WriteToAddrPort(b, ua.AddrPort())
}
