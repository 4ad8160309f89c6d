package redact

import (
	"context"
	"log/slog"
	"strings"
)

// Handler masks secrets in every record a logger writes: its message and
// its string, error and stringer attributes (FFmpeg's errors quote input
// URLs, with their passwords and stream keys' query tokens).
func Handler(h slog.Handler) slog.Handler { return handler{h} }

type handler struct{ next slog.Handler }

func (h handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Text(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(as))
	for i, a := range as {
		masked[i] = attr(a)
	}
	return handler{h.next.WithAttrs(masked)}
}

func (h handler) WithGroup(name string) slog.Handler { return handler{h.next.WithGroup(name)} }

func attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); strings.Contains(s, "://") {
			return slog.String(a.Key, Text(s))
		}
	case slog.KindGroup:
		g := v.Group()
		masked := make([]any, len(g))
		for i, x := range g {
			masked[i] = attr(x)
		}
		return slog.Group(a.Key, masked...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			if s := x.Error(); strings.Contains(s, "://") {
				return slog.String(a.Key, Text(s))
			}
		case interface{ String() string }:
			if s := x.String(); strings.Contains(s, "://") {
				return slog.String(a.Key, Text(s))
			}
		}
	}
	return a
}
