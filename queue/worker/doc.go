// Package worker runs each job's media work in its own child process
// (`prism worker`), so a crash or hang in FFmpeg ends only that job. The
// Supervisor is the node's side (a jobs.Runner): it starts the child, hands
// it the spec, reads its log and its "running" line, stops it, and turns its
// exit code into what the job store records. Child is the process's side.
// exitcode.go is the contract between the two; InProcess runs the same
// work without a child, for nodes configured with node.workers: false.
package worker
