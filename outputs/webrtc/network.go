package webrtc

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
)

// ICE timeouts: a viewer whose packets stop is declared disconnected after
// 5 s and failed (its session ends) after 10 s, instead of pion's 25 s, so a
// dead viewer does not keep a session slot long.
const (
	iceDisconnectedTimeout = 5 * time.Second
	iceFailedTimeout       = 10 * time.Second
	iceKeepalive           = 2 * time.Second
	// socketBuffer is the shared UDP socket's send and receive buffer.
	socketBuffer = 4 << 20
)

// udpBatching sends the shared UDP socket's datagrams in batches (Linux);
// a variable so that the benchmarks can compare.
var udpBatching = true

// network holds the sockets every session shares: one UDP port (ICE UDP mux)
// and optionally one TCP port (ICE-TCP mux), and the SettingEngine that
// points pion at them.
type network struct {
	udp      net.PacketConn
	dropConn *dropWhenFullConn // udp, when it is a real socket
	udpMux   ice.UDPMux
	tcp      net.Listener
	tcpMux   ice.TCPMux
	settings webrtc.SettingEngine
}

func openNetwork(cfg *Config, nw transport.Net, remote candidateFilter, log *slog.Logger) (*network, error) {
	if nw == nil {
		var err error
		if nw, err = stdnet.NewNet(); err != nil {
			return nil, fmt.Errorf("webrtc: network interfaces: %w", err)
		}
	}
	lf := pionLogs{log: log}
	n := &network{}
	udp, err := nw.ListenUDP("udp4", &net.UDPAddr{Port: cfg.UDPPort})
	if err != nil {
		return nil, fmt.Errorf("webrtc.udp_port: listen on %d: %w", cfg.UDPPort, err)
	}
	var conn net.PacketConn = udp
	if uc, ok := udp.(*net.UDPConn); ok {
		// Room for a burst of every viewer's frames; the kernel caps it
		// at net.core.wmem_max.
		_ = uc.SetWriteBuffer(socketBuffer)
		_ = uc.SetReadBuffer(socketBuffer)
		if udpBatching {
			conn = newBatchConn(uc)
		}
		if conn == net.PacketConn(uc) {
			// No batching here: one send per datagram, still never waiting.
			if n.dropConn, err = newDropWhenFullConn(uc); err != nil {
				_ = udp.Close()
				return nil, fmt.Errorf("webrtc.udp_port: %w", err)
			}
			conn = n.dropConn
		}
	}
	n.udp = udp
	n.udpMux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn, Net: nw, Logger: lf.NewLogger("udpmux")})
	types := []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
	if cfg.TCPPort > 0 {
		tcp, err := nw.ListenTCP("tcp4", &net.TCPAddr{Port: cfg.TCPPort})
		if err != nil {
			n.close()
			return nil, fmt.Errorf("webrtc.tcp_port: listen on %d: %w", cfg.TCPPort, err)
		}
		n.tcp = tcp
		n.tcpMux = ice.NewTCPMuxDefault(ice.TCPMuxParams{Listener: tcp, Logger: lf.NewLogger("tcpmux"),
			ReadBufferSize: 64, WriteBufferSize: 4 << 20})
		types = append(types, webrtc.NetworkTypeTCP4)
	}

	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetNet(nw)
	se.SetNetworkTypes(types)
	se.SetICEUDPMux(n.udpMux)
	if n.tcpMux != nil {
		se.SetICETCPMux(n.tcpMux) // the server's TCP candidates: passive, on the shared port
	}
	// pion dials a viewer's "tcptype passive" candidates unless told not
	// to (active ICE-TCP, on by default): a viewer could make the server
	// open TCP connections to any address. Viewers connect to the shared
	// TCP port instead.
	se.DisableActiveTCP(true)
	// Remote candidates are screened before they reach pion (candidateFilter);
	// this also covers those pion adds by itself (peer-reflexive).
	se.SetRemoteIPFilter(remote.allowIP)
	if len(cfg.NAT1To1IPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        cfg.NAT1To1IPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			n.close()
			return nil, fmt.Errorf("webrtc.nat_1to1_ips: %w", err)
		}
	}
	// Viewers reach the server at its host (or NAT 1:1) address and the
	// server learns theirs from their checks (peer-reflexive), so mDNS
	// would only cost a socket and a goroutine per session.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(iceDisconnectedTimeout, iceFailedTimeout, iceKeepalive)
	n.settings = se
	return n, nil
}

// udpAddr is the UDP address sessions share (the port, when 0 was asked).
func (n *network) udpAddr() net.Addr { return n.udp.LocalAddr() }

func (n *network) close() {
	if n.udpMux != nil {
		_ = n.udpMux.Close() // also closes the socket
	} else if n.udp != nil {
		_ = n.udp.Close()
	}
	if n.tcpMux != nil {
		_ = n.tcpMux.Close()
	}
	if n.tcp != nil {
		_ = n.tcp.Close()
	}
}
