package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// deployedConfig documents the configuration: every key, with its default.
var deployedConfig = filepath.Join("..", "deploy", "prism.yaml")

// TestDeployedConfigIsTheDefaults keeps the documented values the ones the
// code uses when a key is absent.
func TestDeployedConfigIsTheDefaults(t *testing.T) {
	got, err := Load(deployedConfig)
	if err != nil {
		t.Fatal(err)
	}
	got.file, got.lines = "", nil
	want := New()
	want.Defaults()
	if !reflect.DeepEqual(got, want) {
		g, _ := yaml.Marshal(got)
		w, _ := yaml.Marshal(want)
		t.Errorf("%s differs from the defaults:\n%s\nwant:\n%s", deployedConfig, g, w)
	}
}

// commentedKey matches a key commented out as an example
// ("  # tls_key: key.pem"): "# " at the key's indentation, so that removing
// it gives the line as it would be set.
var commentedKey = regexp.MustCompile(`^(\s*)# (\s*(?:- )*[a-z0-9_]+:(?:\s.*)?)$`)

// TestDeployedConfigDocumentsEveryKey: each key of Config, set or commented
// out, is in deploy/prism.yaml with a comment on its line or right above.
func TestDeployedConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(deployedConfig)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Split(string(data), "\n")
	for i, line := range text {
		if m := commentedKey.FindStringSubmatch(line); m != nil {
			text[i] = m[1] + m[2]
		}
	}
	// Decoding strictly also checks that the examples are valid keys.
	lines, err := yamlfile.Decode[invalidConfig](deployedConfig+" (examples uncommented)", []byte(strings.Join(text, "\n")), New())
	if err != nil {
		t.Fatal(err)
	}
	keys := yamlKeys(reflect.TypeFor[Config](), "")
	if len(keys) < 50 {
		t.Fatalf("found only %d keys in Config: %v", len(keys), keys)
	}
	for _, key := range keys {
		line, ok := lines[key]
		switch {
		case !ok:
			t.Errorf("%s: %s is missing", deployedConfig, key)
		case !hasComment(text[line-1]) && (line < 2 || !isComment(text[line-2])):
			t.Errorf("%s:%d: %s has no comment on its line or the one above", deployedConfig, line, key)
		}
	}
}

// yamlKeys lists the paths of every key that t decodes, the keys of a
// list's items under its first item ("streams[0].name").
func yamlKeys(t reflect.Type, parent string) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // as goccy/go-yaml names untagged fields
		}
		path := yamlfile.Key(parent, name)
		keys = append(keys, path)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice {
			ft, path = ft.Elem(), yamlfile.Index(path, 0)
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, yamlKeys(ft, path)...)
		}
	}
	return keys
}

func isComment(line string) bool { return strings.HasPrefix(strings.TrimSpace(line), "#") }

// hasComment reports a "#" that starts a comment after a value: preceded by
// a blank and outside quotes.
func hasComment(line string) bool {
	var quote rune
	prev := ' '
	for _, c := range line {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (prev == ' ' || prev == '\t'):
			return true
		}
		prev = c
	}
	return false
}
