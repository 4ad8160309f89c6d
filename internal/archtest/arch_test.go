package archtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/prism-streaming/prism/"

// rank orders the packages along the data flow: a package may import only
// packages of a lower rank. Each entry is a package path prefix (relative to
// the module); the longest match wins.
var rank = map[string]int{
	"pipeline":             0, // plain Go plumbing: imports no Prism package
	"pipeline/ingest":      1, // the push listeners' shared request, refusals and Session
	"pipeline/ingest/rtmp": 2,
	"pipeline/ingest/srt":  2,
	"pipeline/ingest/whip": 2,
	"internal/avlog":       0,
	"internal/yamlfile":    0,
	"deploy":               0,
	"benchmarks":           1, // reads pipeline statistics
	"queue":                0, // the package doc only
	"queue/bus":            0,
	"gpu":                  1,
	"transcode/ladder":     1,
	"internal/testutil":    1,
	"internal/inputs":      1, // what API jobs may read
	"internal/redact":      0, // masks secrets in what is shown
	"internal/stamp":       0, // the demo source's capture-time stamp and its reader
	"internal/auth":        1, // who may do what: asked by the API, outputs' guards and ingest
	"transcode":            2,
	"outputs":              2,
	"config":               3,
	"queue/jobs":           3,
	"queue/relay":          3,
	"queue/worker":         4,
	"internal/node":        5,
	"internal/api":         6,
	"cmd":                  7,
	"internal/archtest":    0,
}

// forbidden are imports that the ranks alone would allow but the flow does
// not: outputs and transcode are peers that never meet.
var forbidden = [][2]string{
	{"outputs", "transcode"}, {"outputs", "queue"}, {"outputs", "internal/api"},
	{"transcode", "outputs"}, {"transcode", "queue"},
	{"gpu", "transcode"},
}

type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	cmd := exec.Command(goBin, "list", "-json", "./...")
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// under reports whether rel is the package prefix or below it.
func under(rel, prefix string) bool { return rel == prefix || strings.HasPrefix(rel, prefix+"/") }

func rankOf(t *testing.T, rel string) int {
	best, r := "", -1
	for prefix, v := range rank {
		if under(rel, prefix) && len(prefix) > len(best) {
			best, r = prefix, v
		}
	}
	if r < 0 {
		t.Fatalf("package %s has no rank: add it to archtest's table (and docs/architecture.md)", rel)
	}
	return r
}

func TestImportsFollowTheDataFlow(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module)
		from := rankOf(t, rel)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			if to := rankOf(t, dep); to >= from {
				t.Errorf("%s (rank %d) imports %s (rank %d): imports must point down the data flow", rel, from, dep, to)
			}
			for _, f := range forbidden {
				if under(rel, f[0]) && under(dep, f[1]) {
					t.Errorf("%s imports %s: %s never imports %s", rel, dep, f[0], f[1])
				}
			}
		}
	}
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}

func TestNoPackageHoldsAQuarterOfTheCode(t *testing.T) {
	lines := map[string]int{}
	total := 0
	for _, p := range listPackages(t) {
		for _, f := range append(p.GoFiles, p.CgoFiles...) {
			n := countLines(t, filepath.Join(p.Dir, f))
			lines[strings.TrimPrefix(p.ImportPath, module)] += n
			total += n
		}
	}
	biggest, most := "", 0
	for p, n := range lines {
		if n > most {
			biggest, most = p, n
		}
		if 4*n > total {
			t.Errorf("%s holds %d of %d non-test lines (more than a quarter)", p, n, total)
		}
	}
	t.Logf("largest package %s: %d of %d non-test lines (%.0f%%)", biggest, most, total, 100*float64(most)/float64(total))
}
