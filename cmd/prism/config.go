package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/prism-streaming/prism/config"
	"github.com/prism-streaming/prism/transcode/ladder"
)

func cmdConfigValidate(args []string, stdout, stderr io.Writer) error {
	return validateFiles("configuration", args, stdout, stderr, func(path string) (string, error) {
		c, err := config.Load(path)
		if err != nil {
			return "", err
		}
		// Ladders named by streams must load too.
		var errs []error
		for i, s := range c.Streams {
			if _, err := ladder.Resolve(s.Ladder, ""); err != nil {
				errs = append(errs, fmt.Errorf("%s: streams[%d].ladder: %w", path, i, err))
			}
		}
		if len(errs) > 0 {
			return "", errors.Join(errs...)
		}
		return fmt.Sprintf("%d streams, HTTP on %s", len(c.Streams), c.HTTP.Address), nil
	})
}
