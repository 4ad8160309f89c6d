// Package auth decides, for every entry point of the server (HTTP API, WHEP
// and LL-HLS playback, RTMP/SRT/WHIP publishing, /metrics), whether a
// principal may do an action on a stream.
//
// # Actions
//
// An [Action] is what a request wants to do: [ActionAPIRead] and
// [ActionAPIWrite] (the job API), [ActionPublish] (push a stream in),
// [ActionPlay] (watch a stream) and [ActionMetrics] (scrape /metrics).
// Publish and play are always about one stream; the API actions are about
// one stream (a job) or none (the job list); metrics are about none.
//
// # Principals
//
// A [Principal] is who a credential stands for. Its Kind says how it was
// proven:
//
//   - "token": a static bearer token of the configuration (auth.tokens) or
//     of the token file (auth.token_file). Tokens are compared in constant
//     time on their SHA-256 digests, so neither their content nor their
//     length leaks through timing.
//   - "jwt": a JSON Web Token signed with the configured key: HS256 with a
//     shared secret, RS256 or ES256 (P-256) with a public key or a JWKS
//     file. Only the algorithm of the configured key is accepted ("none"
//     and algorithm confusion are refused), exp is required, nbf, iss and
//     aud are checked.
//   - "publish_key": the per-stream key of auth.publish_keys, which grants
//     publishing that one stream only.
//   - "local": a request from this machine when no authentication is
//     configured (see below); [LocalPrincipal].
//
// Static tokens and JWTs are told apart by shape: a JWT is three
// base64url segments joined by dots whose header starts with "eyJ" (the
// encoding of `{"`), and the configuration refuses static tokens of that
// shape. Each credential may be limited to some actions and some streams;
// an empty list grants all of them.
//
// # Stream-less requests
//
// Authorize with stream "" asks about an action that is not about one
// stream. Credentials not limited to streams pass. A credential limited to
// streams passes only for [ActionAPIRead], so that a list can be shown to
// it: the caller must then keep only the entries that [Principal.Permits]
// for their stream. Every other stream-less action (api.write of the whole
// server, metrics, which name every stream) is refused to it.
//
// # Default: no authentication configured
//
// With no API token and no JWT key configured ([Authorizer.Enabled] is
// false), nothing can be verified and Authorize refuses every credential.
// Callers then allow local requests only: [IsLocal] for HTTP requests (a
// loopback peer that also names the host as localhost, which defeats DNS
// rebinding) and [IsLoopback] for other peers. [Authorizer.AuthorizeRequest]
// implements that policy for HTTP entry points. Publish keys alone do not
// enable authentication: with only publish keys configured, a stream that
// has a key requires it ([Authorizer.HasPublishKey]), and everything else
// stays local-only. Once authentication is enabled, local requests need a
// credential like any other.
//
// # Errors
//
// Refusals wrap [ErrUnauthenticated] (HTTP 401: no credential, or one that
// does not verify) or [ErrForbidden] (HTTP 403: a valid credential that
// does not grant the action on the stream) and end with a short lower-case
// reason ("token expired", "action publish not granted"). They never hold
// the credential, so they can be logged; [Authorizer.Failures] counts them
// per action for /metrics.
//
// An [Authorizer] never changes after [New] (but for its counters) and is
// safe for concurrent use; a nil *Authorizer is one with nothing
// configured.
package auth
