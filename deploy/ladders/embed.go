// Package ladders ships Prism's stock ladder files (see package
// transcode/ladder for their format) inside the binary, so a server runs
// without a config directory.
package ladders

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// FS holds every *.yaml ladder in this directory.
//
//go:embed *.yaml
var FS embed.FS

const ext = ".yaml"

// Get returns the YAML of the named ladder ("default", not "default.yaml").
func Get(name string) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasSuffix(name, ext) {
		return nil, fmt.Errorf("ladders: invalid ladder name %q (want e.g. %q)", name, "default")
	}
	data, err := FS.ReadFile(name + ext)
	if err != nil {
		return nil, fmt.Errorf("ladders: no built-in ladder %q (have %s): %w", name, strings.Join(Names(), ", "), fs.ErrNotExist)
	}
	return data, nil
}

// Names lists the built-in ladders, sorted, without the .yaml extension.
func Names() []string {
	entries, _ := FS.ReadDir(".") // cannot fail for an embedded root
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ext); ok && !e.IsDir() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
