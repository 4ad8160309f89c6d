package jobs

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// A heartbeat's Gen names its content, not its wall time: a receiver
// holding it skips the decode, yet counts the receipt as a sign of life.
func TestBeatGen(t *testing.T) {
	info := NodeInfo{ID: "n1", CPUBudget: 2e6, Used: 1e6, Jobs: []string{"a", "b"}, Heartbeat: time.Now()}
	data, err := encodeBeat(&info)
	if err != nil {
		t.Fatal(err)
	}
	gen := beatGen(data)
	if gen == "" || gen != info.Gen {
		t.Fatalf("beatGen = %q, info.Gen = %q: want the same, not empty (record %s)", gen, info.Gen, data)
	}
	var decoded NodeInfo
	if err := json.Unmarshal(data, &decoded); err != nil || decoded.Gen != gen {
		t.Fatalf("decoded Gen %q (err %v), want %q", decoded.Gen, err, gen)
	}

	later := info
	later.Heartbeat = info.Heartbeat.Add(time.Second)
	if data2, _ := encodeBeat(&later); beatGen(data2) != gen {
		t.Fatalf("another wall time changed Gen: %q, want %q", beatGen(data2), gen)
	}
	for what, change := range map[string]func(*NodeInfo){
		"jobs":     func(i *NodeInfo) { i.Jobs = []string{"a"} },
		"used":     func(i *NodeInfo) { i.Used = 0 },
		"capacity": func(i *NodeInfo) { i.CPUBudget = 1 },
		"draining": func(i *NodeInfo) { i.Draining = true },
	} {
		c := info
		c.Jobs = slices.Clone(info.Jobs)
		change(&c)
		if d, _ := encodeBeat(&c); beatGen(d) == gen {
			t.Errorf("%s changed but Gen stayed %q", what, gen)
		}
	}

	// decodeBeat: the held copy for the same Gen, a fresh decode otherwise
	// and for records without one.
	held := decoded
	held.Used = 42 // tells the held copy from a decode
	if got, err := decodeBeat(data, held); err != nil || got.Used != 42 {
		t.Fatalf("same Gen: decodeBeat = %+v, %v; want the held copy", got, err)
	}
	held.Gen = "other"
	if got, err := decodeBeat(data, held); err != nil || got.Used != info.Used || !slices.Equal(got.Jobs, info.Jobs) {
		t.Fatalf("other Gen: decodeBeat = %+v, %v; want the record", got, err)
	}
	old := []byte(`{"id":"n1","cpu_budget":1,"used":0,"heartbeat":"2026-01-01T00:00:00Z"}`)
	if beatGen(old) != "" {
		t.Fatalf("beatGen of a record without Gen = %q", beatGen(old))
	}
	if got, err := decodeBeat(old, NodeInfo{ID: "n1"}); err != nil || got.CPUBudget != 1 {
		t.Fatalf("record without Gen: decodeBeat = %+v, %v", got, err)
	}
	for _, bad := range []string{`{"gen":"`, `{"gen":""}`, `{"gen":"0123456789abcdef0"}`, `x`} {
		if g := beatGen([]byte(bad)); g != "" {
			t.Errorf("beatGen(%s) = %q, want none", bad, g)
		}
	}

	// heardSame: only a held Gen counts, and it moves the receipt time.
	v := &view{}
	at := time.Now()
	if v.heardSame("n1", gen, at) {
		t.Fatal("heardSame with no heartbeat held")
	}
	v.coreBeat(decoded, at)
	if v.heardSame("n1", "", at) || v.heardSame("n1", "other", at) || v.heardSame("n2", gen, at) {
		t.Fatal("heardSame for another Gen or node")
	}
	next := at.Add(time.Second)
	if !v.heardSame("n1", gen, next) {
		t.Fatal("heardSame: the held Gen not recognised")
	}
	if seen, _ := v.lastSeen("n1"); !seen.Equal(next) {
		t.Fatalf("receipt time %s, want %s", seen, next)
	}
}
