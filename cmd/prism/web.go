package main

import (
	_ "embed"
	"net/http"
	"os"
	"path/filepath"
)

// indexHTML is the player page at "/": both outputs of a stream side by side.
//
//go:embed web/index.html
var indexHTML []byte

// hlsJSPath finds where `make` installs hls.js (npm, pinned by its lock
// file); PRISM_HLSJS overrides. It is served, not embedded, so the binary
// builds without npm.
func hlsJSPath() string {
	if p := os.Getenv("PRISM_HLSJS"); p != "" {
		return p
	}
	rel := filepath.Join("outputs", "hls", "browser", "node_modules", "hls.js", "dist", "hls.min.js")
	// The checkout holding this binary (bin/prism) or the working directory,
	// or a parent of it (tests run in their package's directory).
	bases := []string{filepath.Join(filepath.Dir(os.Args[0]), "..")}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			bases = append(bases, d)
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, base := range bases {
		if p := filepath.Join(base, rel); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func (s *service) webRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(indexHTML)
	})
	mux.HandleFunc("GET /hls.js", func(w http.ResponseWriter, r *http.Request) {
		p := hlsJSPath()
		if p == "" {
			http.Error(w, "hls.js is not installed: run `make run` (it installs it with npm)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFile(w, r, p)
	})
}
