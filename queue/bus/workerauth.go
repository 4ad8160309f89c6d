package bus

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// workerResponseExpiry bounds how long a worker may answer a request on
// its tracks subject; it answers at once.
const workerResponseExpiry = 30 * time.Second

// tokenAuth is the embedded server's client authentication: the node's
// token with full rights, and per-worker tokens limited to one stream's
// media subjects. nats-server calls Check instead of its own token check
// once it is installed.
type tokenAuth struct {
	node    string
	clients map[[sha256.Size]byte]*server.User // ClientUser tokens, fixed at start

	mu      sync.RWMutex
	workers map[[sha256.Size]byte]*server.User // by the token's hash
}

var _ server.Authentication = (*tokenAuth)(nil)

func (a *tokenAuth) Check(c server.ClientAuthentication) bool {
	got := c.GetOpts().Token
	if subtle.ConstantTimeCompare([]byte(got), []byte(a.node)) == 1 {
		c.RegisterUser(&server.User{Username: "prism-node"}) // nil Permissions: everything
		return true
	}
	// Looking up the hash leaks nothing useful about the token through
	// timing: an attacker cannot steer the hash of a guess.
	key := sha256.Sum256([]byte(got))
	u := a.clients[key]
	if u == nil {
		a.mu.RLock()
		u = a.workers[key]
		a.mu.RUnlock()
	}
	if u == nil || got == "" {
		return false
	}
	c.RegisterUser(u)
	return true
}

// workerPermissions let a worker publish its stream's media, stats and
// answers, and hear only the two subjects relay.Publish serves: no other
// stream, no JetStream, no jobs.
// EventStream is the JetStream stream of stamped timed events
// (queue/relay's EventStream names it from here).
const EventStream = "PRISM_EVENTS"

func workerPermissions(stream string) *server.Permissions {
	prefix := "media." + stream + "."
	timed := "events." + stream + ".timed"
	return &server.Permissions{
		// Its media, its stamped timed events, and reading back its own
		// stream's kept events from EventStream (an ordered consumer
		// filtered on them: the filter is in the create subject).
		Publish: &server.SubjectPermission{Allow: []string{prefix + ">", timed,
			"$JS.API.CONSUMER.CREATE." + EventStream + ".*." + timed,
			"$JS.API.CONSUMER.MSG.NEXT." + EventStream + ".*",
			"$JS.API.CONSUMER.DELETE." + EventStream + ".*"}},
		// A pushed stream's worker also reads the publisher's source
		// (media.<stream>.source.*), asking for its tracks with replies on
		// its own inbox prefix; events come in on events.<stream>.
		Subscribe: &server.SubjectPermission{Allow: []string{prefix + "tracks", prefix + "ctl", prefix + "events",
			"events." + stream, prefix + "source.*", WorkerInboxPrefix(stream) + ".>"}},
		// The tracks request's reply subject: one answer per request.
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: workerResponseExpiry},
	}
}

// WorkerInboxPrefix is the inbox prefix of stream's worker connection
// (ConnectOptions.InboxPrefix): its replies are the only ones it may hear.
func WorkerInboxPrefix(stream string) string { return "_INBOX." + stream }

// IssueWorkerToken returns a token for the worker process of stream's job:
// its connection may publish media.<stream>.> and subscribe only to
// media.<stream>.tracks and media.<stream>.ctl (answering requests there).
// The token is valid until revoke is called; revoking refuses new
// connections (and reconnections), it does not close one that is open.
func (e *Embedded) IssueWorkerToken(stream string) (token string, revoke func(), err error) {
	if e.auth == nil {
		return "", nil, fmt.Errorf("%w: worker tokens: the server's authentication was replaced (Configure)", ErrEmbedded)
	}
	// One literal subject token: a dot or a wildcard would widen the grant.
	// (bus stays below pipeline: the stream-name rule itself lives there.)
	if stream == "" || strings.ContainsAny(stream, ".*> \t\r\n") {
		return "", nil, fmt.Errorf("%w: worker token: stream %q is not one subject token", ErrEmbedded, stream)
	}
	token = randomHex(16)
	key := sha256.Sum256([]byte(token))
	a := e.auth
	a.mu.Lock()
	if a.workers == nil {
		a.workers = map[[sha256.Size]byte]*server.User{}
	}
	a.workers[key] = &server.User{Username: "prism-worker-" + stream, Permissions: workerPermissions(stream)}
	a.mu.Unlock()
	var once sync.Once
	return token, func() {
		once.Do(func() {
			a.mu.Lock()
			delete(a.workers, key)
			a.mu.Unlock()
		})
	}, nil
}
