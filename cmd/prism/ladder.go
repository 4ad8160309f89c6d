package main

import (
	"fmt"
	"io"

	"github.com/prism-streaming/prism/transcode/ladder"
)

func cmdLadderValidate(args []string, stdout, stderr io.Writer) error {
	return validateFiles("ladder", args, stdout, stderr, func(path string) (string, error) {
		l, err := ladder.Load(path)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ladder %q, %d rungs, GOP %s", l.Name, len(l.Rungs), l.GOP), nil
	})
}

// validateFiles checks each file with check, printing "FILE: ok (summary)"
// or the error's lines; it fails if any file is invalid.
func validateFiles(what string, args []string, stdout, stderr io.Writer, check func(path string) (string, error)) error {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "usage: prism %s validate FILE...\n", what)
		return errUsage
	}
	failed := 0
	for _, path := range args {
		summary, err := check(path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s: ok (%s)\n", path, summary)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %s files invalid", failed, len(args), what)
	}
	return nil
}
