// Package queue coordinates Prism's jobs over NATS, split by plane into
// subpackages: bus (the embedded nats-server and client connections), jobs
// (the job record, the store on JetStream KV with revision-checked writes,
// dispatch, and the node agent that claims, leases, fences and takes over
// jobs), relay (media on core NATS subjects between nodes: Publish on the
// owner, Follow on every serving node), and worker (each job's media work
// in its own child process). README.md describes the states, timings and
// wire format.
package queue
