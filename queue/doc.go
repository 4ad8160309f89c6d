// Package queue coordinates Prism's jobs over NATS JetStream: an embedded
// nats-server by default (StartEmbedded), or an external cluster
// (Connect). Jobs live in a KV bucket whose every write is
// revision-checked, so exactly one node owns a running job, and only until
// its lease; dispatch tickets on a work-queue stream tell nodes with room
// to claim pending jobs; node heartbeats live in a second bucket that
// forgets silent nodes. A Node runs the jobs it claims through a Runner,
// renews their leases, stops them the moment a write shows it lost them,
// and takes over jobs whose owner stopped renewing.
//
// Media crosses nodes on core NATS subjects (PublishMedia,
// SubscribeMedia), so a job running elsewhere is, for outputs, just
// another pipeline.Source. README.md describes the states, timings and wire
// format.
package queue
