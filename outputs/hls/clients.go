package hls

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
