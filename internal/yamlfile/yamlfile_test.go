package yamlfile

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

var errTest = errors.New("invalid test file")

type testKind struct{}

func (testKind) Sentinel() error { return errTest }

var errOther = errors.New("invalid other file")

type otherKind struct{}

func (otherKind) Sentinel() error { return errOther }

func TestErrorFormat(t *testing.T) {
	for _, c := range []struct {
		err  Error[testKind]
		want string
	}{
		{Error[testKind]{File: "a.yaml", Line: 3, Field: "streams[2].ladder", Msg: "bad"}, "a.yaml:3: streams[2].ladder: bad"},
		{Error[testKind]{File: "a.yaml", Field: "x", Msg: "bad"}, "a.yaml: x: bad"},
		{Error[testKind]{Line: 3, Msg: "bad"}, "<input>:3: bad"},
		{Error[testKind]{Field: "x", Msg: "bad"}, "x: bad"},
		{Error[testKind]{File: "a.yaml", Line: 1, Msg: "two\r\nlines\nand\rmore"}, "a.yaml:1: two lines and more"},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.err, got, c.want)
		}
	}
}

func TestErrorsMatchTheirSentinelOnly(t *testing.T) {
	list := Errors[testKind]{{File: "a.yaml", Line: 9, Msg: "late"}, {File: "a.yaml", Line: 2, Msg: "first"}, {File: "a.yaml", Line: 9, Msg: "later"}}
	err := fmt.Errorf("loading: %w", list.Err())
	if want := "loading: a.yaml:2: first\na.yaml:9: late\na.yaml:9: later"; err.Error() != want {
		t.Errorf("%q, want %q (sorted by line, stable)", err, want)
	}
	if !errors.Is(err, errTest) || errors.Is(err, errOther) {
		t.Errorf("errors.Is: test %v, other %v; want true, false", errors.Is(err, errTest), errors.Is(err, errOther))
	}
	var one *Error[testKind]
	if !errors.As(err, &one) || one.Msg != "first" || !errors.Is(one, errTest) {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
	var other *Error[otherKind]
	if errors.As(err, &other) {
		t.Error("errors.As found another kind's *Error")
	}
	var got Errors[testKind]
	if !errors.As(err, &got) || len(got) != 3 {
		t.Errorf("errors.As(Errors) = %v", got)
	}
	if (Errors[testKind]{}).Err() != nil {
		t.Error("an empty list must give a nil error")
	}
	if !errors.Is(Errors[testKind]{}, errTest) {
		t.Error("an empty list must still match its sentinel")
	}
}

func TestFieldErrors(t *testing.T) {
	hls := FieldErrors{Section: "hls", Sentinel: errOther}
	if hls.Err() != nil {
		t.Fatal("no problem must give a nil error")
	}
	hls.Addf("part_target", "must be at least %s", "100ms")
	hls.Addf(Index("cors_origins", 1), "invalid origin")
	err := hls.Err()
	if want := "hls.part_target: must be at least 100ms\nhls.cors_origins[1]: invalid origin"; err.Error() != want {
		t.Errorf("%q, want %q", err, want)
	}
	if !errors.Is(err, errOther) {
		t.Error("errors.Is(err, Sentinel) = false")
	}

	// The file places the section under its own key, and locates every
	// field at its line or its nearest enclosing one.
	var top FieldErrors
	top.Addf("data_dir", "missing")
	top.AddSection("output", err)
	top.AddSection("webrtc", errors.New("not a field error"))
	top.AddSection("none", nil)
	lines := Lines{"": 1, "data_dir": 2, "output": 5, "output.part_target": 6, "webrtc": 9}
	located := Locate[testKind]("p.yaml", lines, &top).Err()
	want := strings.Join([]string{
		"p.yaml:2: data_dir: missing",
		"p.yaml:5: output.cors_origins[1]: invalid origin",
		"p.yaml:6: output.part_target: must be at least 100ms",
		"p.yaml:9: webrtc: not a field error",
	}, "\n")
	if located.Error() != want {
		t.Errorf("located:\n%s\nwant:\n%s", located, want)
	}
	if !errors.Is(located, errTest) {
		t.Error("located errors must match the file's sentinel")
	}
	if got := Locate[testKind]("", nil, &top)[0].Error(); got != "data_dir: missing" {
		t.Errorf("without lines: %q", got)
	}
}

func TestPaths(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Key("", "streams"), "streams"},
		{Key(Index("streams", 2), "ladder"), "streams[2].ladder"},
		{Key("rungs[0]", "a.b"), `rungs[0]["a.b"]`},
		{Key("", "new\nline"), `["new\nline"]`},
		{Join("hls", "cors_origins[1]"), "hls.cors_origins[1]"},
		{Join("hls", "[0]"), "hls[0]"},
		{Join("", "x"), "x"},
		{Join("x", ""), "x"},
		{Parent("rungs[2].bitrate"), "rungs[2]"},
		{Parent("rungs[2]"), "rungs"},
		{Parent("rungs"), ""},
		{Parent(`rungs[0]["a.b[c"]`), "rungs[0]"},
	} {
		if c.got != c.want {
			t.Errorf("%q, want %q", c.got, c.want)
		}
	}
	lines := Lines{"": 1, "streams": 3, "streams[1]": 5}
	for field, want := range map[string]int{"streams[1].input": 5, "streams[0].name": 3, "nats.url": 1, "streams": 3} {
		if got := lines.Line(field); got != want {
			t.Errorf("Line(%q) = %d, want %d", field, got, want)
		}
	}
	if got := (Lines{"a": 2}).Line("b"); got != 0 {
		t.Errorf("Line of an unknown field without a top level = %d, want 0", got)
	}
}

type testConfig struct {
	Name    string         `yaml:"name"`
	Streams []testStream   `yaml:"streams"`
	Limits  map[string]int `yaml:"limits"`
}

type testStream struct {
	Name  string `yaml:"name"`
	Input string `yaml:"input"`
}

func TestDecode(t *testing.T) {
	data := "# comment\nname: x\nstreams:\n  - name: a\n    input: rtsp://a\n  - {name: b, input: c}\nlimits: {a: 1}\n"
	var c testConfig
	lines, err := Decode[testKind]("d.yaml", []byte(data), &c)
	if err != nil {
		t.Fatal(err)
	}
	want := testConfig{Name: "x", Streams: []testStream{{"a", "rtsp://a"}, {"b", "c"}}, Limits: map[string]int{"a": 1}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded %+v, want %+v", c, want)
	}
	wantLines := Lines{"": 2, "name": 2, "streams": 3, "streams[0]": 4, "streams[0].name": 4, "streams[0].input": 5,
		"streams[1]": 6, "streams[1].name": 6, "streams[1].input": 6, "limits": 7, "limits.a": 7}
	if !reflect.DeepEqual(lines, wantLines) {
		t.Errorf("lines %v, want %v", lines, wantLines)
	}

	c = testConfig{Name: "kept"}
	if lines, err := Decode[testKind]("d.yaml", []byte("# only comments\n"), &c); err != nil || c.Name != "kept" || len(lines) != 0 {
		t.Errorf("empty file: %v, %+v, %v", err, c, lines)
	}
	if _, err := Decode[testKind]("d.yaml", []byte("\ufeffname: x\n"), &c); err != nil || c.Name != "x" {
		t.Errorf("byte order mark: %v, %+v", err, c)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct{ name, data, want string }{
		{"unknown key", "name: x\nstreams:\n  - name: a\n    inptu: b\n", `d.yaml:4: streams[0].inptu: unknown field "inptu"`},
		{"duplicate keys", "name: x\nname: y\nname: z\n", "d.yaml:2: name: duplicate key (first set on line 1)\nd.yaml:3: name: duplicate key (first set on line 1)"},
		{"wrong type", "streams:\n  - {name: [a]}\n", "d.yaml:2: streams[0].name: cannot unmarshal"},
		{"not a list", "streams: 3\n", "d.yaml:1: streams: "},
		{"syntax", "name: [\n", "d.yaml:1: invalid YAML: "},
		{"two documents", "name: x\n---\nname: y\n", "d.yaml:3: found more than one YAML document; expected one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v testConfig
			_, err := Decode[testKind]("d.yaml", []byte(c.data), &v)
			if err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, errTest) {
				t.Errorf("got %v, want prefix %q", err, c.want)
			}
		})
	}
}

func TestParseSkipsDirectivesAndEmptyDocuments(t *testing.T) {
	bodies, err := Parse[testKind]("p.yaml", []byte("%YAML 1.2\n---\na: 1\n...\n---\n"))
	if err != nil || len(bodies) != 1 || LineOf(bodies[0]) != 3 {
		t.Errorf("Parse = %v, %v", bodies, err)
	}
}
