package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prism-streaming/prism/queue/jobs"
)

// Error is a node's answer with an error status: Msg is its reason.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// maxResponse bounds what the client reads of one answer.
const maxResponse = 16 << 20

// Client calls a node's job API (what `prism job` uses). Answers are the
// node's JSON as it sent it.
type Client struct {
	Server string       // the node's base URL, e.g. http://localhost:8080
	Token  string       // a bearer token or JWT, when the node requires one
	HTTP   *http.Client // default: 30 s timeout
}

// Submit posts a job spec and returns the job as created; replace gives an
// ended job's id the new spec.
func (c *Client) Submit(ctx context.Context, spec jobs.Spec, replace bool) ([]byte, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	path := ""
	if replace {
		path = "?replace=true"
	}
	return c.do(ctx, http.MethodPost, path, body)
}

// Get returns one job.
func (c *Client) Get(ctx context.Context, id string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/"+url.PathEscape(id), nil)
}

// Stop asks for a job to stop and returns it.
func (c *Client) Stop(ctx context.Context, id string) ([]byte, error) {
	return c.do(ctx, http.MethodPost, "/"+url.PathEscape(id)+"/stop", nil)
}

// List returns every job of the cluster.
func (c *Client) List(ctx context.Context) ([]JobInfo, error) {
	body, err := c.do(ctx, http.MethodGet, "", nil)
	if err != nil {
		return nil, err
	}
	var list []JobInfo
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%s: job list: %w", c.Server, err)
	}
	return list, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Server, "/")+"/api/v1/jobs"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // the API refuses other types for changes
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Server, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(answer, &e) == nil && e.Error != "" {
			return nil, &Error{Status: resp.StatusCode, Msg: e.Error}
		}
		return nil, &Error{Status: resp.StatusCode, Msg: fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(answer))}
	}
	return answer, nil
}
