package main

import (
	"fmt"
	"io"

	"github.com/prism-streaming/prism/config"
)

func cmdConfigValidate(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: prism config validate FILE...")
		return errUsage
	}
	failed := 0
	for _, path := range args {
		c, err := config.Load(path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed++
			continue
		}
		// Ladders named by streams must load too.
		ok := true
		for i, s := range c.Streams {
			if _, err := loadLadder(s.Ladder); err != nil {
				fmt.Fprintf(stderr, "%s: streams[%d].ladder: %v\n", path, i, err)
				ok = false
			}
		}
		if !ok {
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s: ok (%d streams, HTTP on %s)\n", path, len(c.Streams), c.HTTP.Address)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d configuration files invalid", failed, len(args))
	}
	return nil
}
