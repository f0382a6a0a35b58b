package spoolclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultUserAgent is the User-Agent sent unless WithUserAgent sets another.
const DefaultUserAgent = "spoolclient-go/1"

// DefaultMaxResponseBytes bounds a successful answer's body unless WithMaxResponseBytes sets
// another bound: a worker result may be 20 MB on Spool, and the first terminal /stream answer
// carries every chunk not read before.
const DefaultMaxResponseBytes = 64 << 20

// Client calls the API of one server with one key. It is safe for concurrent use.
type Client struct {
	base     string // scheme://host[:port]/path, without a trailing slash
	baseErr  error  // why base is unusable, if it is
	auth     string // the API key
	hc       *http.Client
	ua       string
	maxBody  int64
	pollWait time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc instead of http.DefaultClient. Calls
// that wait (RunSync, StatusSync, Wait, Stream) hold a request open for up to their wait, so
// hc.Timeout, if set, must be longer than that.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithUserAgent sets the User-Agent header. Defaults to DefaultUserAgent.
func WithUserAgent(ua string) Option { return func(c *Client) { c.ua = ua } }

// WithMaxResponseBytes bounds the body of a successful answer; a longer one is an error. Defaults
// to DefaultMaxResponseBytes. Error answers are always read up to 64 KiB.
func WithMaxResponseBytes(n int64) Option {
	return func(c *Client) {
		if n > 0 {
			c.maxBody = n
		}
	}
}

// New returns a client of the API at baseURL, which names the /v2 root: for Spool
// "http://127.0.0.1:8080/v2", for RunPod "https://api.runpod.ai/v2". A trailing slash is ignored,
// and a URL with no path at all ("http://127.0.0.1:8080") gets /v2. apiKey is sent as
// "Authorization: Bearer <apiKey>" (nothing when it is ""). A baseURL that cannot be parsed makes every call fail.
func New(baseURL, apiKey string, opts ...Option) *Client {
	base, baseErr := normalizeBase(baseURL)
	c := &Client{
		base:     base,
		baseErr:  baseErr,
		auth:     apiKey,
		hc:       http.DefaultClient,
		ua:       DefaultUserAgent,
		maxBody:  DefaultMaxResponseBytes,
		pollWait: 30 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func normalizeBase(s string) (string, error) {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, fmt.Errorf("spoolclient: invalid base URL %q: want http(s)://host[:port][/v2]", s)
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v2"
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// BaseURL returns the /v2 root the client calls, normalised as New describes.
func (c *Client) BaseURL() string { return c.base }

// EndpointNames lists the server's endpoints (GET /api/endpoints on the server's root). It is a
// Spool extension that needs an admin key: other keys get an *APIError with status 403, and RunPod
// answers 404.
func (c *Client) EndpointNames(ctx context.Context) ([]string, error) {
	var v struct {
		Endpoints []struct {
			Name string `json:"name"`
		} `json:"endpoints"`
	}
	if err := c.do(ctx, call{op: "list endpoints", method: http.MethodGet, path: []string{"api", "endpoints"}, admin: true}, &v); err != nil {
		return nil, err
	}
	names := make([]string, len(v.Endpoints))
	for i, ep := range v.Endpoints {
		names[i] = ep.Name
	}
	return names, nil
}

// Endpoint returns a handle on the named endpoint (on RunPod, its id). It makes no request.
func (c *Client) Endpoint(name string) *Endpoint { return &Endpoint{c: c, name: name} }

// call is one request: method, path segments under the base, query and body.
type call struct {
	op     string // for error messages: "run", "status of job X", ...
	method string
	path   []string
	query  url.Values
	body   []byte
	// admin puts path under the server's root (the base without its /v2) instead of the base:
	// Spool's /api.
	admin bool
}

// do sends a request and decodes a 200 answer into out. Any other status is an *APIError.
func (c *Client) do(ctx context.Context, cl call, out any) error {
	if c.baseErr != nil {
		return c.baseErr
	}
	var b strings.Builder
	if cl.admin {
		b.WriteString(strings.TrimSuffix(c.base, "/v2"))
	} else {
		b.WriteString(c.base)
	}
	for _, p := range cl.path {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(p))
	}
	if len(cl.query) > 0 {
		b.WriteByte('?')
		b.WriteString(cl.query.Encode())
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, b.String(), body)
	if err != nil {
		return fmt.Errorf("spoolclient: %s: %w", cl.op, err)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", "Bearer "+c.auth)
	}
	req.Header.Set("Accept", "application/json")
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return fmt.Errorf("spoolclient: %s: %w", cl.op, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
		return fmt.Errorf("spoolclient: %s: %w", cl.op, newAPIError(res, raw, time.Now()))
	}
	raw, err := io.ReadAll(io.LimitReader(res.Body, c.maxBody+1))
	if err != nil {
		return fmt.Errorf("spoolclient: %s: read answer: %w", cl.op, err)
	}
	if int64(len(raw)) > c.maxBody {
		return fmt.Errorf("spoolclient: %s: answer exceeds %d bytes (see WithMaxResponseBytes)", cl.op, c.maxBody)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("spoolclient: %s: decode answer: %w", cl.op, err)
	}
	return nil
}

// msParam formats a wait for ?wait=: whole milliseconds, at least 0.
func msParam(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 0), 10)
}
