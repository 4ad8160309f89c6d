package bus

import (
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// ClientUser is an application other than Prism that connects to the
// embedded server with its own token: a data pipeline publishing timed
// events and reading stamped events and viewers' actions.
type ClientUser struct {
	Name  string
	Token string // at least MinClientToken characters
	// Publish and Subscribe are the subjects it may use (wildcards
	// allowed); empty takes DefaultClientPublish / DefaultClientSubscribe.
	// It may always subscribe to its own inbox, _INBOX.<Name>.>, for the
	// answers to its requests (nats CLI: --inbox-prefix _INBOX.<Name>).
	Publish, Subscribe []string
}

// MinClientToken is the shortest ClientUser.Token accepted.
const MinClientToken = 16

// Defaults of ClientUser's subjects: events in, stamped events and
// actions out; nothing of the jobs, the media or JetStream.
var (
	DefaultClientPublish   = []string{"events.*"}
	DefaultClientSubscribe = []string{"events.*.timed", "actions.*"}
)

// ClientInboxPrefix is the inbox prefix a client user's requests must use.
func ClientInboxPrefix(name string) string { return "_INBOX." + name }

// ValidSubject reports why s is no subject a permission may name: empty
// tokens, white space, or '>' anywhere but last.
func ValidSubject(s string) error {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("subject %q: empty or with white space", s)
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return fmt.Errorf("subject %q: an empty token", s)
		case t == ">" && i != len(toks)-1:
			return fmt.Errorf("subject %q: '>' must be the last token", s)
		case len(t) > 1 && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("subject %q: a wildcard must be a whole token", s)
		}
	}
	return nil
}

// addClients registers the client users' tokens (before the server starts).
func (a *tokenAuth) addClients(clients []ClientUser) error {
	a.clients = map[[sha256.Size]byte]*server.User{}
	names := map[string]bool{}
	for _, c := range clients {
		switch {
		case c.Name == "" || strings.ContainsAny(c.Name, ".*> \t\r\n"):
			return fmt.Errorf("%w: client %q: the name must be one subject token", ErrEmbedded, c.Name)
		case names[c.Name]:
			return fmt.Errorf("%w: client %q: named twice", ErrEmbedded, c.Name)
		case len(c.Token) < MinClientToken:
			return fmt.Errorf("%w: client %q: the token needs at least %d characters", ErrEmbedded, c.Name, MinClientToken)
		case c.Token == a.node:
			return fmt.Errorf("%w: client %q: its token is the node's", ErrEmbedded, c.Name)
		}
		key := sha256.Sum256([]byte(c.Token))
		if a.clients[key] != nil {
			return fmt.Errorf("%w: client %q: its token is another client's", ErrEmbedded, c.Name)
		}
		pub, sub := c.Publish, c.Subscribe
		if len(pub) == 0 {
			pub = DefaultClientPublish
		}
		if len(sub) == 0 {
			sub = DefaultClientSubscribe
		}
		for _, s := range append(append([]string(nil), pub...), sub...) {
			if err := ValidSubject(s); err != nil {
				return fmt.Errorf("%w: client %q: %w", ErrEmbedded, c.Name, err)
			}
		}
		names[c.Name] = true
		a.clients[key] = &server.User{Username: "client-" + c.Name, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: append([]string(nil), pub...)},
			Subscribe: &server.SubjectPermission{Allow: append(append([]string(nil), sub...), ClientInboxPrefix(c.Name)+".>")},
		}}
	}
	return nil
}
