package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/prism-streaming/prism/deploy/ladders"
	"github.com/prism-streaming/prism/transcode/ladder"
)

func cmdLadderValidate(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: prism ladder validate FILE...")
		return errUsage
	}
	failed := 0
	for _, path := range args {
		l, err := ladder.Load(path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s: ok (ladder %q, %d rungs, GOP %s)\n", path, l.Name, len(l.Rungs), l.GOP)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d ladder files invalid", failed, len(args))
	}
	return nil
}

// loadLadder loads a ladder by path, or one of the shipped ladders by name.
func loadLadder(ref string) (*ladder.Ladder, error) {
	if ref == "" {
		ref = "default"
	}
	if _, err := os.Stat(ref); err == nil || strings.ContainsAny(ref, "/.") {
		return ladder.Load(ref)
	}
	data, err := ladders.Get(ref)
	if err != nil {
		return nil, fmt.Errorf("no ladder file %q and no shipped ladder of that name (shipped: %s)", ref, strings.Join(ladders.Names(), ", "))
	}
	return ladder.Parse("deploy/ladders/"+ref+".yaml", data)
}
