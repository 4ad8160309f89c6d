// Command prism is a live transcoding server: one input, decoded once, an
// adaptive-bitrate ladder out, delivered over WebRTC and LL-HLS.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prism-streaming/prism/internal/redact"
	"github.com/prism-streaming/prism/queue/worker"
)

const usage = `Usage: prism <command> [flags]

Commands:
  serve              run the service (--demo adds a test stream named "demo")
  transcode          run a ladder over one input and write fragmented MP4 per rung
  bench              measure ladder throughput, optionally against the FFmpeg CLI
  ladder validate    check ladder files (exit 1 with file:line messages on error)
  config validate    check service configuration files (same file:line messages)
  job                submit|list|get|stop jobs through a node's API (--server)
  gpu probe          show which hardware devices and encoders open on this machine
  token              mint a JWT for signed playback, publishing or the API (auth.jwt)

Run "prism <command> -h" for the flags of a command.
`

// errUsage marks a command-line mistake: exit code 2, not 1.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel()})
	if len(args) > 0 && args[0] == "worker" {
		// A worker's log is read back by its node: JSON keeps levels and
		// fields intact on the way.
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel()})
	}
	// Secrets in URLs (passwords, tokens, SRT passphrases) never reach a log.
	slog.SetDefault(slog.New(redact.Handler(handler)))
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stdout, stderr)
	case "transcode":
		err = cmdTranscode(args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(args[1:], stdout, stderr)
	case "ladder":
		if len(args) < 2 || args[1] != "validate" {
			fmt.Fprintln(stderr, "usage: prism ladder validate FILE...")
			return 2
		}
		err = cmdLadderValidate(args[2:], stdout, stderr)
	case "config":
		if len(args) < 2 || args[1] != "validate" {
			fmt.Fprintln(stderr, "usage: prism config validate FILE...")
			return 2
		}
		err = cmdConfigValidate(args[2:], stdout, stderr)
	case "job":
		err = cmdJob(args[1:], stdout, stderr)
	case "worker": // hidden: started by prism serve, one per job
		err = cmdWorker(args[1:], stdout, stderr)
	case "token":
		err = cmdToken(args[1:], stdout, stderr)
	case "gpu":
		if len(args) < 2 || args[1] != "probe" {
			fmt.Fprintln(stderr, "usage: prism gpu probe [--json]")
			return 2
		}
		err = cmdGPUProbe(args[2:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "prism: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.As(err, new(*worker.ExitError)):
		var ee *worker.ExitError
		errors.As(err, &ee)
		fmt.Fprintln(stderr, "prism:", err)
		return ee.Code
	default:
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "prism:", line)
		}
		return 1
	}
}

func logLevel() slog.Level {
	switch strings.ToLower(os.Getenv("PRISM_LOG")) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// newFlagSet returns a flag set whose errors come back as errUsage.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("prism "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}
