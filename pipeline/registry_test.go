package pipeline

import (
	"errors"
	"testing"
)

type fakeSource struct{ Source }

func TestRegistry(t *testing.T) {
	var r Registry
	var events []StreamEvent
	a := &fakeSource{}
	if err := r.Add("a", a); err != nil {
		t.Fatal(err)
	}
	cancel := r.Watch(func(ev StreamEvent) { events = append(events, ev) })
	if err := r.Add("a", a); !errors.Is(err, ErrStreamExists) {
		t.Errorf("duplicate: %v", err)
	}
	for _, bad := range []string{"", "../x", "a b", "-x", string(make([]byte, 65))} {
		if err := r.Add(bad, a); !errors.Is(err, ErrStreamName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if err := r.Add("b", a); err != nil {
		t.Fatal(err)
	}
	if j, ok := r.Get("b"); !ok || j != a {
		t.Error("Get b")
	}
	r.Remove("a")
	r.Remove("nope")
	cancel()
	if err := r.Add("c", a); err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 || events[0].Name != "a" || events[1].Name != "b" || !events[2].Removed {
		t.Errorf("events %+v", events)
	}
	if n := r.Names(); len(n) != 2 || n[0] != "b" || n[1] != "c" {
		t.Errorf("names %v", n)
	}
}
