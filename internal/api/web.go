package api

import (
	"embed"
	"io/fs"
	"net/http"
)

// web holds the player page and hls.js. index.html is committed; the set-up
// copies hls.min.js there from npm (pinned by outputs/hls/browser's lock
// file, git-ignored), so the binary carries it and never looks on disk.
// A build without it still works: /hls.js then says how to get it.
//
//go:embed web
var web embed.FS

func webRoutes(mux *http.ServeMux) {
	index, _ := fs.ReadFile(web, "web/index.html")
	publish, _ := fs.ReadFile(web, "web/publish.html")
	hlsJS, hlsErr := fs.ReadFile(web, "web/hls.min.js")
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(index)
	})
	// The browser publisher: camera and microphone over WHIP.
	mux.HandleFunc("GET /publish", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(publish)
	})
	mux.HandleFunc("GET /hls.js", func(w http.ResponseWriter, r *http.Request) {
		if hlsErr != nil {
			http.Error(w, "hls.js was not embedded in this build: build with `make build` (it installs it with npm)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=86400")
		_, _ = w.Write(hlsJS)
	})
}
