// Package dashboard serves Spool's web dashboard: its page and assets (embedded; no JavaScript
// toolchain builds them) and its sign-in sessions. The pages read and act through the same /api
// and client API routes as everyone else; httpapi lets a session stand in for the Authorization
// header there (Authenticate).
//
// A session is a random id in a cookie the pages cannot read (HttpOnly) and browsers send to this
// site only (SameSite=Strict; Secure over HTTPS). The store keeps the id's hash, the hash of the
// key signed in with and the expiry, so a copy of the database opens no session; signing out
// deletes it, and since every request looks the key up again, a revoked key ends its sessions at
// once. A request that changes something must also carry the session's CSRF token in the
// X-Spool-CSRF header, which only the dashboard's own pages can read (from GET /ui/session), and
// an Origin, when sent, that is this server.
package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/wire"
	"github.com/spool-run/spool/store"
)

//go:embed assets
var assets embed.FS

// CookieName is the session cookie.
const CookieName = "spool_session"

// CSRFHeader carries the session's CSRF token on requests that change something.
const CSRFHeader = "X-Spool-CSRF"

// Config configures the dashboard.
type Config struct {
	// Keys authenticates sign-ins and, at every request, the key behind a session. Required.
	Keys *auth.Keyring
	// Sessions stores the sessions. Required.
	Sessions store.SessionStore
	// Clock dates sessions. Defaults to the wall clock.
	Clock clock.Clock
	// TTL is how long a session lasts. Defaults to 12 h.
	TTL time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Dashboard serves the dashboard's routes.
type Dashboard struct {
	cfg    Config
	static http.Handler
	etags  map[string]string // by asset path: the assets change only with the binary
}

// New returns the dashboard.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Keys == nil || cfg.Sessions == nil {
		return nil, errors.New("dashboard: Keys and Sessions are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.TTL == 0 {
		cfg.TTL = 12 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	etags := map[string]string{}
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, path)
		sum := sha256.Sum256(b)
		etags[path] = `"` + hex.EncodeToString(sum[:8]) + `"`
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Dashboard{cfg: cfg, static: http.StripPrefix("/ui/", http.FileServerFS(sub)), etags: etags}, nil
}

// Routes are the dashboard's routes, by http.ServeMux pattern.
func (d *Dashboard) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /{$}":           http.HandlerFunc(d.index),
		"GET /ui/":           http.HandlerFunc(d.asset),
		"GET /ui/session":    http.HandlerFunc(d.whoami),
		"POST /ui/session":   http.HandlerFunc(d.signIn),
		"DELETE /ui/session": http.HandlerFunc(d.signOut),
	}
}

// securityHeaders keep the pages from being framed, sniffed or made to load anything from
// elsewhere: everything they need is served here.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

func (d *Dashboard) index(w http.ResponseWriter, r *http.Request) {
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		wire.WriteErrorLog(w, d.cfg.Logger, err)
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(page)
}

func (d *Dashboard) asset(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	// The assets change with the binary: revalidate, and the file server answers 304 by ETag.
	w.Header().Set("Cache-Control", "no-cache")
	if tag, ok := d.etags[strings.TrimPrefix(r.URL.Path, "/ui/")]; ok {
		w.Header().Set("ETag", tag)
	}
	d.static.ServeHTTP(w, r)
}

// session is a signed-in browser: its stored record and its CSRF token, derived from the id the
// cookie holds (so that neither the store nor anything but the cookie's holder can tell it).
type session struct {
	store.Session
	csrf string
}

func csrfOf(id string) string {
	sum := sha256.Sum256([]byte("spool dashboard csrf v1\x00" + id))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// whoamiView answers GET and POST /ui/session.
type whoamiView struct {
	Name     string `json:"name"`
	KeyID    string `json:"keyId"`
	ReadOnly bool   `json:"readOnly"`
	CSRF     string `json:"csrf"`
	Expires  string `json:"expires"`
}

func (d *Dashboard) view(k *spool.Key, s session) whoamiView {
	return whoamiView{Name: k.Name, KeyID: k.ID, ReadOnly: k.ReadOnly, CSRF: s.csrf,
		Expires: wire.FormatTime(s.ExpiresAt)}
}

// maxSignIn bounds a sign-in body: a key and some JSON.
const maxSignIn = 4 << 10

func (d *Dashboard) signIn(w http.ResponseWriter, r *http.Request) {
	if err := sameOrigin(r); err != nil {
		wire.WriteError(w, err)
		return
	}
	body, err := wire.ReadBody(w, r, maxSignIn)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	var req struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Key == "" {
		wire.WriteError(w, spool.Errorf(spool.CodeInvalid, `sign in with a JSON body {"key": "<admin key>"}`))
		return
	}
	key, err := d.cfg.Keys.Authenticate(r.Context(), "Bearer "+req.Key)
	if err != nil {
		wire.WriteErrorLog(w, d.cfg.Logger, err)
		return
	}
	if key.Scope != spool.ScopeAdmin {
		wire.WriteError(w, spool.Errorf(spool.CodeForbidden, "the dashboard needs an admin key (read-only or not); this key has the %s scope", key.Scope))
		return
	}
	now := d.cfg.Clock.Now()
	// Sign-ins clear the sessions that ended: the table holds live sessions and no more.
	if _, err := d.cfg.Sessions.DeleteSessionsBefore(r.Context(), now); err != nil {
		d.cfg.Logger.Warn("delete ended dashboard sessions", "err", err)
	}
	id := newToken()
	s := session{Session: store.Session{Hash: spool.HashKey(id), KeyHash: spool.HashKey(req.Key),
		CreatedAt: now, ExpiresAt: now.Add(d.cfg.TTL)}, csrf: csrfOf(id)}
	if err := d.cfg.Sessions.PutSession(r.Context(), s.Session); err != nil {
		wire.WriteErrorLog(w, d.cfg.Logger, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: "/", MaxAge: int(d.cfg.TTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
	d.cfg.Logger.Info("dashboard sign-in", "key", key.ID, "readOnly", key.ReadOnly)
	wire.WriteJSON(w, http.StatusOK, d.view(key, s))
}

func (d *Dashboard) whoami(w http.ResponseWriter, r *http.Request) {
	key, s, ok, err := d.session(r)
	if !ok {
		err = spool.Errorf(spool.CodeUnauthorized, "not signed in")
	}
	if err != nil {
		wire.WriteErrorLog(w, d.cfg.Logger, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	wire.WriteJSON(w, http.StatusOK, d.view(key, s))
}

func (d *Dashboard) signOut(w http.ResponseWriter, r *http.Request) {
	_, ok, err := d.Authenticate(r, true)
	switch {
	case ok && err != nil && spool.ErrorCode(err) != spool.CodeUnauthorized:
		wire.WriteError(w, err) // a cross-site sign-out is refused
		return
	case ok && err == nil:
		c, _ := r.Cookie(CookieName)
		if err := d.cfg.Sessions.DeleteSession(r.Context(), spool.HashKey(c.Value)); err != nil {
			wire.WriteErrorLog(w, d.cfg.Logger, err)
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r)})
	w.WriteHeader(http.StatusNoContent)
}

// secure says whether the cookie must be Secure: the request came over TLS, or through a proxy
// that ends TLS, which the browser's Origin (sent on the POST that signs in) tells.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(r.Header.Get("Origin"), "https://")
}

// Authenticate returns the key of the request's session (httpapi.Sessions). ok is false when
// the request carries no session cookie; err is a 401 for a session that is no longer good and a
// 403 for a write without the session's CSRF token or from another origin.
func (d *Dashboard) Authenticate(r *http.Request, write bool) (*spool.Key, bool, error) {
	key, s, ok, err := d.session(r)
	if !ok || err != nil {
		return nil, ok, err
	}
	if write {
		if err := sameOrigin(r); err != nil {
			return nil, true, err
		}
		got := r.Header.Get(CSRFHeader)
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
			return nil, true, spool.Errorf(spool.CodeForbidden, "missing or wrong CSRF token: a dashboard session changes things only from the dashboard's pages (header %s)", CSRFHeader)
		}
	}
	return key, true, nil
}

func (d *Dashboard) session(r *http.Request) (*spool.Key, session, bool, error) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return nil, session{}, false, nil
	}
	ended := spool.Errorf(spool.CodeUnauthorized, "your dashboard session has ended; sign in again")
	if len(c.Value) > 100 {
		return nil, session{}, true, ended
	}
	stored, err := d.cfg.Sessions.GetSession(r.Context(), spool.HashKey(c.Value))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, session{}, true, ended // signed out, or never made here
	case err != nil:
		return nil, session{}, true, err
	case !d.cfg.Clock.Now().Before(stored.ExpiresAt):
		return nil, session{}, true, ended
	}
	key, err := d.cfg.Keys.AuthenticateHash(r.Context(), stored.KeyHash)
	if err != nil {
		if spool.ErrorCode(err) == spool.CodeUnauthorized {
			err = spool.Errorf(spool.CodeUnauthorized, "the key of this dashboard session was revoked; sign in again")
		}
		return nil, session{}, true, err
	}
	if key.Scope != spool.ScopeAdmin {
		return nil, session{}, true, ended
	}
	return key, session{Session: stored, csrf: csrfOf(c.Value)}, true, nil
}

// sameOrigin refuses a request whose Origin header names another site. Browsers send Origin on
// every POST, PUT and DELETE; tools that send none are not browsers and carry no cookie of ours
// by accident.
func sameOrigin(r *http.Request) error {
	o := r.Header.Get("Origin")
	if o == "" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || u.Host != r.Host {
		return spool.Errorf(spool.CodeForbidden, "cross-origin request refused (Origin %q is not this server)", o)
	}
	return nil
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
