package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Action is what a request wants to do.
type Action string

// The actions. Publish and play are about one stream; the API actions about
// one stream (a job) or none (the job list); metrics about none.
const (
	ActionAPIRead  Action = "api.read"
	ActionAPIWrite Action = "api.write"
	ActionPublish  Action = "publish"
	ActionPlay     Action = "play"
	ActionMetrics  Action = "metrics"
)

// Actions lists every action, in a fixed order.
func Actions() []Action {
	return []Action{ActionAPIRead, ActionAPIWrite, ActionPublish, ActionPlay, ActionMetrics}
}

// index is the position of a in Actions, -1 for an unknown action.
func (a Action) index() int {
	switch a {
	case ActionAPIRead:
		return 0
	case ActionAPIWrite:
		return 1
	case ActionPublish:
		return 2
	case ActionPlay:
		return 3
	case ActionMetrics:
		return 4
	}
	return -1
}

// Valid reports whether a is one of the actions.
func (a Action) Valid() bool { return a.index() >= 0 }

// numActions is len(Actions()).
const numActions = 5

var (
	// ErrUnauthenticated (HTTP 401): no credential, or one that does not
	// verify (bad signature, expired, not yet valid, unknown token).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden (HTTP 403): a valid credential that does not grant this
	// action on this stream.
	ErrForbidden = errors.New("forbidden")
)

// unauthenticated and forbidden build the refusals: sentinel, then reason.
func unauthenticated(reason string) error { return fmt.Errorf("%w: %s", ErrUnauthenticated, reason) }
func forbidden(reason string) error       { return fmt.Errorf("%w: %s", ErrForbidden, reason) }

// Principal kinds.
const (
	KindToken      = "token"       // a static bearer token
	KindJWT        = "jwt"         // a verified JSON Web Token
	KindPublishKey = "publish_key" // a stream's publish key
	KindLocal      = "local"       // a local request, no authentication configured
)

// Principal is who a credential stands for, and what it may do.
type Principal struct {
	// Name is shown in logs and metrics instead of the credential: the
	// token's name, the JWT's subject ("jwt" without one),
	// "publish_key:<stream>" or "local".
	Name string
	// Kind is KindToken, KindJWT, KindPublishKey or KindLocal.
	Kind string
	// Streams are the streams the principal may act on; nil: every stream.
	Streams []string
	// Actions are the actions granted; nil: every action.
	Actions []Action
}

// LocalPrincipal is the principal of a local request (IsLocal) when no
// authentication is configured: it may do everything.
func LocalPrincipal() Principal { return Principal{Name: "local", Kind: KindLocal} }

// Permits reports, as an error wrapping ErrForbidden, whether p may do
// action on stream; "" is a stream-less request (see the package
// documentation). Callers filtering a list for a principal limited to
// streams call it for each entry.
func (p Principal) Permits(action Action, stream string) error {
	if !action.Valid() {
		return forbidden("unknown action " + quoteName(string(action)))
	}
	if p.Actions != nil && !slices.Contains(p.Actions, action) {
		return forbidden("action " + string(action) + " not granted")
	}
	if p.Streams == nil {
		return nil
	}
	if stream == "" {
		if action == ActionAPIRead {
			return nil // the caller filters the list with Permits
		}
		return forbidden("action " + string(action) + " needs a credential valid for every stream")
	}
	if !slices.Contains(p.Streams, stream) {
		return forbidden("token not valid for stream " + quoteName(stream))
	}
	return nil
}

// quoteName prints a stream or action name as it is when it is a valid
// name, quoted otherwise (it may come from a URL, so it may hold anything).
func quoteName(s string) string {
	if pipeline.ValidName(s) || Action(s).Valid() {
		return s
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.QuoteToASCII(s)
}

// staticToken is a configured bearer token: its digest, never the token.
type staticToken struct {
	digest    [sha256.Size]byte
	principal Principal
}

// Authorizer answers "may this credential do this action on this stream?".
// It is built by New, never changes afterwards (but for its counters) and
// is safe for concurrent use. A nil *Authorizer has nothing configured.
type Authorizer struct {
	enabled     bool
	tokens      []staticToken
	jwt         *jwtVerifier // nil: JWTs are not accepted
	publishKeys map[string][sha256.Size]byte
	now         func() time.Time
	failures    [numActions]atomic.Uint64
}

// Enabled reports whether any API token or JWT key is configured. When it
// is not, callers allow local requests only (IsLocal).
func (a *Authorizer) Enabled() bool { return a != nil && a.enabled }

// HasPublishKey reports whether stream has a publish key, which publishers
// of that stream must then present (or a credential granting publish on
// it) even when Enabled is false.
func (a *Authorizer) HasPublishKey(stream string) bool {
	if a == nil {
		return false
	}
	_, ok := a.publishKeys[stream]
	return ok
}

// Authorize checks credential, a static token or a JWT (told apart by
// shape), for action on stream; stream "" asks about an action that is not
// about one stream (see the package documentation). It returns the
// principal, also along with an ErrForbidden refusal so that the caller
// can log who was refused. Every refusal is counted in Failures.
func (a *Authorizer) Authorize(credential string, action Action, stream string) (Principal, error) {
	p, err := a.authorize(credential, action, stream)
	if err != nil {
		a.countFailure(action)
	}
	return p, err
}

func (a *Authorizer) authorize(credential string, action Action, stream string) (Principal, error) {
	p, err := a.authenticate(credential)
	if err != nil {
		return Principal{}, err
	}
	return p, p.Permits(action, stream)
}

// authenticate finds the principal of credential.
func (a *Authorizer) authenticate(credential string) (Principal, error) {
	switch {
	case credential == "":
		return Principal{}, unauthenticated("no credential")
	case len(credential) > MaxCredentialLen:
		return Principal{}, unauthenticated("credential too large")
	case !a.Enabled():
		return Principal{}, unauthenticated("authentication is not configured")
	case looksLikeJWT(credential):
		if a.jwt == nil {
			return Principal{}, unauthenticated("jwt not accepted: no jwt key configured")
		}
		return a.jwt.verify(credential, a.now())
	}
	digest := sha256.Sum256([]byte(credential))
	found := -1
	for i := range a.tokens {
		// Every token is compared, whichever matches.
		if subtle.ConstantTimeCompare(digest[:], a.tokens[i].digest[:]) == 1 && found < 0 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, unauthenticated("unknown token")
	}
	return a.tokens[found].principal, nil
}

// AuthorizePublishKey checks key, presented by a publisher (RTMP stream
// key, SRT stream id, WHIP bearer token) of stream: the publish key of that
// stream, else any credential that Authorize accepts for ActionPublish on
// stream. A refusal is counted once, under ActionPublish.
func (a *Authorizer) AuthorizePublishKey(stream, key string) (Principal, error) {
	p, err := a.authorizePublishKey(stream, key)
	if err != nil {
		a.countFailure(ActionPublish)
	}
	return p, err
}

func (a *Authorizer) authorizePublishKey(stream, key string) (Principal, error) {
	want, hasKey := [sha256.Size]byte{}, false
	if a != nil {
		want, hasKey = a.publishKeys[stream]
	}
	if hasKey && key != "" && len(key) <= MaxCredentialLen {
		got := sha256.Sum256([]byte(key))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			return Principal{
				Name:    KindPublishKey + ":" + stream,
				Kind:    KindPublishKey,
				Streams: []string{stream},
				Actions: []Action{ActionPublish},
			}, nil
		}
	}
	p, err := a.authorize(key, ActionPublish, stream)
	if err != nil && hasKey && key != "" && len(key) <= MaxCredentialLen &&
		!looksLikeJWT(key) && errors.Is(err, ErrUnauthenticated) {
		// Not a token either: say what the publisher most likely got wrong.
		return Principal{}, unauthenticated("publish key does not match")
	}
	return p, err
}

// AuthorizeRequest is the policy of an HTTP entry point. With
// authentication enabled, the request's Credential must grant action on
// stream (Authorize). Without, local requests (IsLocal) are allowed as
// LocalPrincipal and others are refused with ErrForbidden, since no
// credential could help.
func (a *Authorizer) AuthorizeRequest(r *http.Request, action Action, stream string) (Principal, error) {
	if a.Enabled() {
		return a.Authorize(Credential(r), action, stream)
	}
	if IsLocal(r) {
		if !action.Valid() {
			return Principal{}, forbidden("unknown action " + quoteName(string(action)))
		}
		return LocalPrincipal(), nil
	}
	a.countFailure(action)
	return Principal{}, forbidden("authentication is not configured: only local requests are allowed")
}

func (a *Authorizer) countFailure(action Action) {
	if i := action.index(); a != nil && i >= 0 {
		a.failures[i].Add(1)
	}
}

// Failures counts the refusals per action since New, every action present
// (zero included), for /metrics. Refusals of unknown actions are not
// counted.
func (a *Authorizer) Failures() map[Action]uint64 {
	m := make(map[Action]uint64, numActions)
	for i, action := range Actions() {
		if a != nil {
			m[action] = a.failures[i].Load()
		} else {
			m[action] = 0
		}
	}
	return m
}
