package pipeline

import "net/netip"

// ClientKey is what the outputs' per-client caps count by: the peer's IP
// address as the connection shows it (X-Forwarded-For could be forged),
// IPv6 by /64, since a single host commonly holds a whole /64.
func ClientKey(remoteAddr string) string {
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
