package ladders

import (
	"errors"
	"io/fs"
	"slices"
	"testing"
)

func TestNamesAndGet(t *testing.T) {
	names := Names()
	for _, want := range []string{"default", "mobile"} {
		if !slices.Contains(names, want) {
			t.Errorf("Names() = %v; missing %q", names, want)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("Names() = %v; want sorted", names)
	}
	for _, name := range names {
		if data, err := Get(name); err != nil || len(data) == 0 {
			t.Errorf("Get(%q) = %d bytes, %v", name, len(data), err)
		}
	}
	for _, bad := range []string{"", "default.yaml", "../default", "nope"} {
		if _, err := Get(bad); err == nil {
			t.Errorf("Get(%q) succeeded", bad)
		}
	}
	if _, err := Get("nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get(nope) = %v; want fs.ErrNotExist", err)
	}
}
