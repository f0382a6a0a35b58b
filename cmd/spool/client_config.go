package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// defaultClientURL is the server the client commands call when nothing says otherwise.
const defaultClientURL = "http://127.0.0.1:8080"

// clientFile is the client config file (~/.config/spool/client.yaml or $SPOOL_CLIENT_CONFIG).
type clientFile struct {
	// URL is the server, e.g. http://127.0.0.1:8080 (or https://api.runpod.ai/v2).
	URL string `yaml:"url"`
	// Key is the API key (a client or admin key).
	Key string `yaml:"key"`
}

// clientTarget is where the client commands send their requests.
type clientTarget struct {
	URL string
	Key string
}

// clientConfigPath returns the client config file to read and whether it was named explicitly
// ($SPOOL_CLIENT_CONFIG), in which case it must exist.
func clientConfigPath(getenv func(string) string) (string, bool) {
	if p := getenv("SPOOL_CLIENT_CONFIG"); p != "" {
		return p, true
	}
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			home, _ = os.UserHomeDir()
		}
		if home == "" {
			return "", false
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "spool", "client.yaml"), false
}

// resolveTarget combines, lowest first, the config file, the environment (SPOOL_URL,
// SPOOL_API_KEY) and the flags (--url, --key; flagURL/flagKey are nil when not given).
func resolveTarget(getenv func(string) string, flagURL, flagKey *string) (clientTarget, error) {
	var t clientTarget
	path, explicit := clientConfigPath(getenv)
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			var f clientFile
			dec := yaml.NewDecoder(bytes.NewReader(b))
			dec.KnownFields(true)
			if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
				// The YAML decoder lists its errors on several lines; the CLI reports errors on one.
				return t, usageErrorf("client config %s: %s", path, strings.Join(strings.Fields(err.Error()), " "))
			}
			t.URL, t.Key = f.URL, f.Key
		case errors.Is(err, fs.ErrNotExist) && !explicit:
		default:
			return t, usageErrorf("client config: %v", err)
		}
	}
	if v := getenv("SPOOL_URL"); v != "" {
		t.URL = v
	}
	if v := getenv("SPOOL_API_KEY"); v != "" {
		t.Key = v
	}
	if flagURL != nil {
		t.URL = *flagURL
	}
	if flagKey != nil {
		t.Key = *flagKey
	}
	t.URL = strings.TrimSpace(t.URL)
	t.Key = strings.TrimSpace(t.Key)
	if t.URL == "" {
		t.URL = defaultClientURL
	}
	if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return t, usageErrorf("invalid server URL %q: want http(s)://host[:port]", t.URL)
	}
	if t.Key == "" {
		where := "~/.config/spool/client.yaml"
		if path != "" {
			where = path
		}
		return t, usageErrorf("no API key: set SPOOL_API_KEY, pass --key, or put key: in %s", where)
	}
	return t, nil
}

// readInput returns the job input named by the run command's argument: JSON text, @FILE, or - for
// stdin; {} when there is no argument. It must be valid JSON and not null.
func readInput(arg string, hasArg bool, stdin io.Reader) (json.RawMessage, error) {
	const limit = 64 << 20
	var b []byte
	src := "input"
	switch {
	case !hasArg:
		return json.RawMessage(`{}`), nil
	case arg == "-":
		src = "stdin"
		var err error
		if b, err = io.ReadAll(io.LimitReader(stdin, limit+1)); err != nil {
			return nil, usageErrorf("read stdin: %v", err)
		}
	case strings.HasPrefix(arg, "@"):
		src = arg[1:]
		f, err := os.Open(src)
		if err != nil {
			return nil, usageErrorf("input file: %v", unwrapPathError(err))
		}
		defer f.Close()
		if b, err = io.ReadAll(io.LimitReader(f, limit+1)); err != nil {
			return nil, usageErrorf("read %s: %v", src, err)
		}
	default:
		b = []byte(arg)
	}
	if len(b) > limit {
		return nil, usageErrorf("%s is larger than %d MB", src, limit>>20)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, usageErrorf("%s is empty; the job input must be JSON, e.g. '{\"prompt\":\"hi\"}'", src)
	}
	var v json.RawMessage
	if err := json.Unmarshal(b, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, usageErrorf("%s is not valid JSON: %v (at byte %d)", src, err, se.Offset)
		}
		return nil, usageErrorf("%s is not valid JSON: %v", src, err)
	}
	if string(b) == "null" {
		return nil, usageErrorf("the job input must not be null")
	}
	return json.RawMessage(b), nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// msDuration is a flag value given as a Go duration ("30s", "2m") or whole milliseconds ("5000"),
// as the API counts them; it must be positive.
type msDuration struct {
	d   time.Duration
	set bool
}

func (m *msDuration) String() string {
	if !m.set {
		return ""
	}
	return m.d.String()
}

func (m *msDuration) Set(s string) error {
	s = strings.TrimSpace(s)
	var d time.Duration
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > int64(time.Duration(1<<63-1)/time.Millisecond) {
			return fmt.Errorf("%s ms is too long", s)
		}
		d = time.Duration(n) * time.Millisecond
	} else {
		d, err = time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a duration such as 30s or 2m, or milliseconds such as 5000")
		}
	}
	if d <= 0 {
		return fmt.Errorf("must be positive")
	}
	m.d, m.set = d, true
	return nil
}

func (m *msDuration) Type() string { return "duration" }
