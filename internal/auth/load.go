package auth

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// maxFileSize bounds the files New reads.
const maxFileSize = 4 << 20

// New builds the Authorizer of cfg: it validates cfg (Validate), then reads
// the token file and the JWT secret, key or JWKS file. Every error matches
// ErrInvalidConfig; those about a file name it (and the line, for the token
// file) and say what is wrong.
func New(cfg Config) (*Authorizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authorizer{
		enabled:     cfg.Enabled(),
		publishKeys: make(map[string][sha256.Size]byte, len(cfg.PublishKeys)),
		now:         time.Now,
	}
	// Where each secret was first seen, so that the token file cannot
	// repeat a token or a publish key (Validate checked the section).
	seen := map[[sha256.Size]byte]string{}
	for i := range cfg.Tokens {
		t := &cfg.Tokens[i]
		d := sha256.Sum256([]byte(t.Token))
		seen[d] = yamlfile.Join("auth", yamlfile.Index("tokens", i))
		a.tokens = append(a.tokens, staticToken{digest: d, principal: principalOf(t, len(a.tokens)+1)})
	}
	for stream, key := range cfg.PublishKeys {
		d := sha256.Sum256([]byte(key))
		seen[d] = yamlfile.Join("auth", yamlfile.Key("publish_keys", stream))
		a.publishKeys[stream] = d
	}
	if cfg.TokenFile != "" {
		lines, err := readTokenFile(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		var errs yamlfile.Errors[invalidConfig]
		for _, l := range lines {
			d := sha256.Sum256([]byte(l.token.Token))
			if prev, dup := seen[d]; dup {
				errs = append(errs, &fileError{File: cfg.TokenFile, Line: l.line, Msg: "same token as " + prev})
				continue
			}
			seen[d] = fmt.Sprintf("%s:%d", cfg.TokenFile, l.line)
			a.tokens = append(a.tokens, staticToken{digest: d, principal: principalOf(&l.token, len(a.tokens)+1)})
		}
		if err := errs.Err(); err != nil {
			return nil, err
		}
	}
	v, err := newJWTVerifier(&cfg.JWT)
	if err != nil {
		return nil, err
	}
	a.jwt = v
	return a, nil
}

// readFile reads a file that New needs, at most maxFileSize bytes; errors
// name the file.
func readFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &fileError{File: path, Msg: "cannot read the " + what + ": " + pathErrorReason(err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, &fileError{File: path, Msg: "cannot read the " + what + ": " + pathErrorReason(err)}
	}
	if len(data) > maxFileSize {
		return nil, &fileError{File: path, Msg: fmt.Sprintf("the %s is larger than %d bytes", what, maxFileSize)}
	}
	return data, nil
}

// pathErrorReason is the reason of an *fs.PathError without the path,
// which the error already names.
func pathErrorReason(err error) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// tokenLine is a token of the token file and the line it is on.
type tokenLine struct {
	token Token
	line  int
}

// readTokenFile reads and checks the token file.
func readTokenFile(path string) ([]tokenLine, error) {
	data, err := readFile(path, "token file")
	if err != nil {
		return nil, err
	}
	return parseTokenFile(path, data)
}

// parseTokenFile parses the lines of a token file (see Config.TokenFile).
// Every bad line is reported, as "file:line: ..."; no message holds a
// token.
func parseTokenFile(path string, data []byte) ([]tokenLine, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 BOM
	var (
		tokens []tokenLine
		errs   yamlfile.Errors[invalidConfig]
	)
	for n, line := range strings.Split(string(data), "\n") {
		lineNo := n + 1
		fields := strings.Fields(stripComment(line))
		if len(fields) == 0 {
			continue
		}
		fe := yamlfile.FieldErrors{}
		t := Token{Token: fields[0]}
		seenOpt := map[string]bool{}
		for i, f := range fields[1:] {
			key, value, ok := strings.Cut(f, "=")
			field := fmt.Sprintf("option %d", i+1)
			switch {
			case !ok:
				fe.Addf(field, "expected actions=, streams= or name= after the token")
				continue
			case key != "actions" && key != "streams" && key != "name":
				// Not echoed: a blank inside a token would make it an option.
				fe.Addf(field, "unknown option: use actions=, streams= or name=")
				continue
			case seenOpt[key]:
				fe.Addf(key, "is given twice")
				continue
			case value == "":
				fe.Addf(key, "needs a value")
				continue
			}
			seenOpt[key] = true
			switch key {
			case "actions":
				for a := range strings.SplitSeq(value, ",") {
					t.Actions = append(t.Actions, Action(a))
				}
			case "streams":
				t.Streams = strings.Split(value, ",")
			case "name":
				t.Name = value
			}
		}
		validateToken(&t, "", &fe)
		for _, f := range fe.Fields {
			errs = append(errs, &fileError{File: path, Line: lineNo, Field: f.Field, Msg: f.Msg})
		}
		if len(fe.Fields) == 0 {
			tokens = append(tokens, tokenLine{token: t, line: lineNo})
		}
	}
	seen := map[string]int{}
	for _, t := range tokens {
		if prev, dup := seen[t.token.Token]; dup {
			errs = append(errs, &fileError{File: path, Line: t.line, Field: "token", Msg: fmt.Sprintf("same token as line %d", prev)})
		} else {
			seen[t.token.Token] = t.line
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return tokens, nil
}

// stripComment cuts line at a '#' that starts it or follows a blank; a '#'
// inside a token is kept.
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			return line[:i]
		}
	}
	return line
}
