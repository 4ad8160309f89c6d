module github.com/prism-streaming/prism

go 1.26.8

require (
	github.com/asticode/go-astiav v0.39.0
	github.com/goccy/go-yaml v1.19.2
)

require github.com/asticode/go-astikit v0.42.0 // indirect
