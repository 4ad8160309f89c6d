package node

import (
	"sync"
	"time"
)

// refusalLimiter slows down guessing: a remote host that was refused
// maxFailures times within window is refused at once, credential unread,
// until window has passed since its last failure. Publishers such as OBS
// retry a refused stream forever, and each attempt would otherwise cost a
// key check. The table is bounded: when full, the stalest host goes.
type refusalLimiter struct {
	maxFailures int
	window      time.Duration
	maxHosts    int

	mu    sync.Mutex
	hosts map[string]*failures
}

type failures struct {
	count int
	last  time.Time
}

func newRefusalLimiter(maxFailures int, window time.Duration, maxHosts int) *refusalLimiter {
	return &refusalLimiter{maxFailures: maxFailures, window: window, maxHosts: maxHosts, hosts: map[string]*failures{}}
}

// blocked reports whether host is refused at once, and for how long still.
func (l *refusalLimiter) blocked(host string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.hosts[host]
	if f == nil {
		return false, 0
	}
	if now.Sub(f.last) >= l.window {
		delete(l.hosts, host)
		return false, 0
	}
	if f.count < l.maxFailures {
		return false, 0
	}
	return true, l.window - now.Sub(f.last)
}

// failed counts a refusal of host.
func (l *refusalLimiter) failed(host string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.hosts[host]
	if f == nil {
		if len(l.hosts) >= l.maxHosts {
			l.evictLocked(now)
		}
		f = &failures{}
		l.hosts[host] = f
	}
	if now.Sub(f.last) >= l.window {
		f.count = 0
	}
	f.count++
	f.last = now
}

// succeeded forgets host's failures.
func (l *refusalLimiter) succeeded(host string) {
	l.mu.Lock()
	delete(l.hosts, host)
	l.mu.Unlock()
}

// evictLocked drops expired hosts, or the stalest one when none expired.
func (l *refusalLimiter) evictLocked(now time.Time) {
	var stalest string
	var oldest time.Time
	for h, f := range l.hosts {
		if now.Sub(f.last) >= l.window {
			delete(l.hosts, h)
			continue
		}
		if stalest == "" || f.last.Before(oldest) {
			stalest, oldest = h, f.last
		}
	}
	if len(l.hosts) >= l.maxHosts && stalest != "" {
		delete(l.hosts, stalest)
	}
}
