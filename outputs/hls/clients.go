package hls

import "net/netip"

// clientKey is what the per-client blocking cap counts by: the peer's IP
// address as the connection shows it (X-Forwarded-For could be forged),
// IPv6 by /64, since a single host commonly holds a whole /64.
func clientKey(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return remoteAddr // not an IP connection (unix socket): one client
	}
	a := ap.Addr().Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// holdClientSlot takes one of client's hls.max_blocking_per_client slots;
// false when it has none left.
func (s *Server) holdClientSlot(client string) bool {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	if s.blockingClients[client] >= s.Config.MaxBlockingPerClient {
		return false
	}
	s.blockingClients[client]++
	return true
}

func (s *Server) dropClientSlot(client string) {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	if s.blockingClients[client]--; s.blockingClients[client] <= 0 {
		delete(s.blockingClients, client)
	}
}
