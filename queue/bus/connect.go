package bus

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectOptions configure a client connection to a NATS server or cluster
// (an external one, or this node's embedded server over TCP).
type ConnectOptions struct {
	Name string // shown in the server's connection list
	// Authentication: at most one of CredsFile, NKeySeedFile, Token.
	CredsFile    string // a .creds file (user JWT and NKey seed)
	NKeySeedFile string // an NKey user seed file
	Token        string
	// TLS: a CA to verify the server, and a client certificate (both files
	// or neither).
	TLSCAFile, TLSCertFile, TLSKeyFile string
	// InboxPrefix replaces "_INBOX" for this connection's request replies
	// (a worker's, WorkerInboxPrefix, so that its permissions can name them).
	InboxPrefix string `json:",omitempty"`
	// MaxReconnectDelay caps the reconnect backoff (default 2 s). The
	// client reconnects forever: a node without its store cannot do
	// anything useful, and giving up would strand its running jobs.
	MaxReconnectDelay time.Duration
	// Log receives connection events (default slog.Default()). It does not
	// travel with the options to a worker process.
	Log *slog.Logger `json:"-"`
}

// Reconnect backoff: the first retry comes quickly so that a restarted
// embedded server is found before leases run out.
const firstReconnectDelay = 50 * time.Millisecond

// Connect dials url (one URL, or several separated by commas).
func Connect(url string, opts ConnectOptions) (*nats.Conn, error) {
	no, err := opts.natsOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, no...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConnect, url, err)
	}
	return nc, nil
}

func (o ConnectOptions) natsOptions() ([]nats.Option, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "nats-client", "name", o.Name)
	maxDelay := o.MaxReconnectDelay
	if maxDelay <= 0 {
		maxDelay = 2 * time.Second
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return reconnectDelay(attempts, maxDelay)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("nats error", "subject", subject, "err", err)
		}),
	}

	auth := 0
	for _, s := range []string{o.CredsFile, o.NKeySeedFile, o.Token} {
		if s != "" {
			auth++
		}
	}
	if auth > 1 {
		return nil, fmt.Errorf("%w: set only one of CredsFile, NKeySeedFile and Token", ErrConnect)
	}
	switch {
	case o.CredsFile != "":
		if err := readable(o.CredsFile, "CredsFile"); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.NKeySeedFile != "":
		if err := readable(o.NKeySeedFile, "NKeySeedFile"); err != nil {
			return nil, err
		}
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: NKeySeedFile %s: %w", ErrConnect, o.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}

	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if o.TLSCAFile != "" {
		if err := readable(o.TLSCAFile, "TLSCAFile"); err != nil {
			return nil, err
		}
		opts = append(opts, nats.RootCAs(o.TLSCAFile))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return nil, fmt.Errorf("%w: TLSCertFile and TLSKeyFile go together", ErrConnect)
	}
	if o.TLSCertFile != "" {
		for _, f := range [][2]string{{o.TLSCertFile, "TLSCertFile"}, {o.TLSKeyFile, "TLSKeyFile"}} {
			if err := readable(f[0], f[1]); err != nil {
				return nil, err
			}
		}
		opts = append(opts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
	}
	return opts, nil
}

// reconnectDelay doubles from firstReconnectDelay up to maxDelay, with up
// to 20% jitter so that the nodes of a cluster do not all return in the same
// instant.
func reconnectDelay(attempts int, maxDelay time.Duration) time.Duration {
	d := firstReconnectDelay
	for i := 1; i < attempts && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

// readable checks a configured file up front, so a typo is reported by
// name instead of as a handshake failure.
func readable(path, field string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConnect, field, err)
	}
	return f.Close()
}
