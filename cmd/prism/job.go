package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/prism-streaming/prism/internal/api"
	"github.com/prism-streaming/prism/queue/jobs"
)

// cmdJob is `prism job submit|list|get|stop`: a client of a node's REST API.
func cmdJob(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: prism job submit|list|get|stop [flags]")
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("job "+sub, stderr)
	server := fs.String("server", "http://localhost:8080", "a Prism node's HTTP address")
	token := fs.String("token", os.Getenv("PRISM_TOKEN"), "API token or JWT (default $PRISM_TOKEN); needed once the node has auth configured")
	var spec jobs.Spec
	var ladderFile string
	var replace bool
	if sub == "submit" {
		fs.StringVar(&spec.ID, "id", "", "job id, also the stream name (letters, digits, '-', '_')")
		fs.StringVar(&spec.Input, "input", "", "input URL")
		fs.StringVar(&spec.Ladder, "ladder", "default", "shipped ladder name")
		fs.StringVar(&ladderFile, "ladder-file", "", "ladder YAML file, sent inline (nodes need not have it)")
		fs.BoolVar(&spec.Restart, "restart", false, "restart when the input ends or drops (live sources)")
		fs.BoolVar(&replace, "replace", false, "give an ended job's id this new spec (without it, an ended job keeps its spec)")
		fs.BoolVar(&spec.Constraints.NeedsGPU, "gpu", false, "run only on a node with a GPU")
		fs.BoolFunc("realtime", "pace file and lavfi inputs at 1x (default true; --realtime=false runs them as fast as possible)", func(v string) error {
			b, err := strconv.ParseBool(v)
			spec.Realtime = &b
			return err
		})
		fs.Func("outputs", "comma-separated deliveries that serve the stream: hls, webrtc (default: all)", func(v string) error {
			spec.Outputs = strings.Split(v, ",")
			return nil
		})
		fs.Func("publish", "also push the ladder over WHIP to this URL, as one simulcast track (repeatable)", func(v string) error {
			spec.Publish = append(spec.Publish, jobs.PublishTarget{URL: v})
			return nil
		})
		fs.Func("publish-token", "bearer token for the last --publish URL", func(v string) error {
			if len(spec.Publish) == 0 {
				return fmt.Errorf("--publish-token needs a --publish URL before it")
			}
			spec.Publish[len(spec.Publish)-1].Token = v
			return nil
		})
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	client := &api.Client{Server: *server, Token: *token}
	ctx := context.Background()
	var answer []byte
	var err error
	switch sub {
	case "submit":
		if ladderFile != "" {
			data, err := os.ReadFile(ladderFile)
			if err != nil {
				return err
			}
			spec.Ladder, spec.LadderYAML = ladderFile, string(data)
		}
		answer, err = client.Submit(ctx, spec, replace)
	case "list":
		list, err := client.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tOWNER\tATTEMPTS\tINPUT\tREASON")
		for _, j := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", j.Spec.ID, j.State, j.Owner, j.Attempts, j.Spec.Input, j.Reason)
		}
		return tw.Flush()
	case "get", "stop":
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "usage: prism job %s ID\n", sub)
			return errUsage
		}
		if sub == "get" {
			answer, err = client.Get(ctx, fs.Arg(0))
		} else {
			answer, err = client.Stop(ctx, fs.Arg(0))
		}
	default:
		fmt.Fprintf(stderr, "prism job: unknown subcommand %q (submit, list, get, stop)\n", sub)
		return errUsage
	}
	if err != nil {
		return err
	}
	_, err = stdout.Write(answer)
	return err
}
