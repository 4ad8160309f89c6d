//go:build !linux

package webrtc

import "net"

// newBatchConn returns pc unchanged: batched sends use Linux's sendmmsg.
func newBatchConn(pc net.PacketConn) net.PacketConn { return pc }
