package webrtc

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/pion/ice/v4"
)

// broadcast4 is the IPv4 limited broadcast address.
var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// candidateFilter decides which of a viewer's ICE candidates the server
// uses. A candidate is an address the server will send connectivity checks
// to, so a viewer could otherwise aim the server at itself (loopback), at
// the host's link (link-local, multicast) or at ranges the operator keeps
// private (webrtc.deny_candidate_cidrs).
type candidateFilter struct {
	deny []netip.Prefix
}

func newCandidateFilter(cidrs []string) (candidateFilter, error) {
	var f candidateFilter
	for _, c := range cidrs {
		p, err := parsePrefix(c)
		if err != nil {
			return f, fmt.Errorf("%w: webrtc.deny_candidate_cidrs: %q: %w", ErrInvalidConfig, c, err)
		}
		f.deny = append(f.deny, p)
	}
	return f, nil
}

// refuse says why the server ignores a remote candidate, or "" when it
// uses it.
func (f candidateFilter) refuse(c ice.Candidate) string {
	// The server's ICE-TCP is passive only: viewers connect to it. A
	// passive or simultaneous-open candidate would ask the server to dial.
	if c.NetworkType().IsTCP() && c.TCPType() != ice.TCPTypeActive {
		return fmt.Sprintf("tcptype %q: the server does not dial out over TCP", c.TCPType())
	}
	addr, err := netip.ParseAddr(c.Address())
	if err != nil {
		// mDNS (.local) names: mDNS is off (see openNetwork), and the
		// viewer's checks reveal its address anyway (peer-reflexive).
		return "not an IP address"
	}
	return f.refuseAddr(addr)
}

// refuseAddr says why the server does not send to addr, or "".
func (f candidateFilter) refuseAddr(addr netip.Addr) string {
	addr = addr.Unmap().WithZone("")
	switch {
	case !addr.IsValid():
		return "not an IP address"
	case addr.IsLoopback():
		return "loopback address"
	case addr.IsLinkLocalUnicast():
		return "link-local address"
	case addr.IsUnspecified():
		return "unspecified address"
	case addr.IsMulticast():
		return "multicast address"
	case addr == broadcast4:
		return "broadcast address"
	}
	for _, p := range f.deny {
		if p.Contains(addr) {
			return fmt.Sprintf("in %s (webrtc.deny_candidate_cidrs)", p)
		}
	}
	return ""
}

// allowIP is the filter given to pion (SettingEngine.SetRemoteIPFilter):
// it also covers the candidates pion learns by itself, the peer-reflexive
// ones discovered from a viewer's connectivity checks.
func (f candidateFilter) allowIP(ip net.IP) bool {
	addr, ok := netip.AddrFromSlice(ip)
	return ok && f.refuseAddr(addr) == ""
}

// screenOffer removes from an SDP offer the candidates the server ignores,
// so that pion never adds them, and counts the candidates the offer
// carried (ignored or not): more than limit is an error wrapping
// ErrTooManyCandidates. A candidate that does not parse is an error
// wrapping ErrBadOffer.
func (f candidateFilter) screenOffer(offer string, limit int) (screened string, candidates int, err error) {
	lines := strings.SplitAfter(offer, "\n")
	kept := lines[:0]
	for _, line := range lines {
		attr, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "a=")
		if !ok || !strings.HasPrefix(attr, "candidate:") {
			kept = append(kept, line)
			continue
		}
		if candidates++; candidates > limit {
			return "", candidates, fmt.Errorf("%w: the offer has more than %d (webrtc.max_candidates)", ErrTooManyCandidates, limit)
		}
		c, err := ice.UnmarshalCandidate(attr)
		if err != nil {
			return "", candidates, fmt.Errorf("%w: %w", ErrBadOffer, err)
		}
		if f.refuse(c) == "" {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, ""), candidates, nil
}
