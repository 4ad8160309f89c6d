package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/prism-streaming/prism/gpu"
)

func cmdGPUProbe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gpu probe", stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	r := gpu.Probe()
	if *asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	for _, d := range r.Devices {
		fmt.Fprintf(stdout, "device  %-6s %s\n", d.Type, status(d.Available, d.Error))
	}
	for _, e := range r.Encoders {
		fmt.Fprintf(stdout, "encoder %-11s %s\n", e.Name, status(e.Available, e.Error))
	}
	fmt.Fprintln(stdout, "encoder libx264     available (software)")
	return nil
}

func status(ok bool, reason string) string {
	if ok {
		return "available"
	}
	return "unavailable: " + reason
}
