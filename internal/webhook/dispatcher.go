// Package webhook delivers the webhook outbox: the deliveries the store enqueued with each
// terminal transition of a job with a webhook (docs/contract.md §2). It claims due deliveries with a
// lease (a crash mid-attempt makes the delivery due again when the lease runs out: at least once,
// with the same webhook-id), POSTs them through an SSRF-guarded HTTP client, signs them with
// Standard Webhooks headers when the endpoint has a secret, and records every attempt. Concurrency
// is bounded overall and per receiving host, so one slow receiver never holds back the others. The
// job's state never depends on its webhook: this package only reads jobs' payloads.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/leader"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// MaxResponseBytes is how much of a receiver's answer is read (and thrown away); a longer answer is
// cut off, so a receiver streaming an endless body costs nothing.
const MaxResponseBytes = 64 << 10

// leaseMargin is added to an attempt's timeout to make its claim's lease: long enough to record
// the outcome after the timeout.
const leaseMargin = 5 * time.Second

// Attempt outcomes, the label values of the metrics.
const (
	OutcomeSuccess      = "success"       // a 2xx
	OutcomeHTTPError    = "http_error"    // any other status, redirects included
	OutcomeTimeout      = "timeout"       // no complete answer within the timeout
	OutcomeRefused      = "refused"       // the SSRF guard or the URL check refused the target
	OutcomeNetworkError = "network_error" // resolution, connection or TLS failed
)

// Observer hears about attempts and finished deliveries (metrics). Methods must not block.
type Observer interface {
	// WebhookAttempt: one attempt ended with outcome after d.
	WebhookAttempt(endpoint, outcome string, d time.Duration)
	// WebhookFinished: a delivery ended, state delivered or failed.
	WebhookFinished(endpoint string, state spool.DeliveryState)
}

type nopObserver struct{}

func (nopObserver) WebhookAttempt(string, string, time.Duration) {}
func (nopObserver) WebhookFinished(string, spool.DeliveryState)  {}

// Config configures a Dispatcher.
type Config struct {
	// Store holds the outbox. Required.
	Store store.Store
	// Clock schedules retries and leases. Defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default(). URLs, payloads and secrets are never logged.
	Logger *slog.Logger
	// Endpoint returns an endpoint's current settings (schedule, timeout, secret). A delivery of
	// an endpoint that no longer exists goes on with RunPod's schedule, unsigned. Required.
	Endpoint func(name string) (spool.Endpoint, bool)
	// Observer hears about attempts (metrics). Optional.
	Observer Observer
	// Concurrency bounds the attempts in flight. Defaults to 32.
	Concurrency int
	// PerHost bounds the attempts in flight to one host (host:port). Defaults to 4.
	PerHost int
	// AllowCIDRs are let through the SSRF guard (receivers on a private network).
	AllowCIDRs []netip.Prefix
	// AllowLoopback lets webhooks reach 127.0.0.0/8 and ::1 (`spool dev`).
	AllowLoopback bool
	// Resolver resolves receivers' host names. Defaults to net.DefaultResolver.
	Resolver Resolver
	// Retention is how long finished deliveries (and their attempts) stay listed. Defaults to
	// 7 days.
	Retention time.Duration
	// RescanInterval is the safety net: the outbox is scanned at least this often even without a
	// wake-up. Defaults to 1 min.
	RescanInterval time.Duration
	// Notifier, when set, wakes the dispatcher when a delivery is enqueued (notify.Webhooks),
	// in this process or another replica. Notify does it within this process.
	Notifier notify.Notifier
	// Leader says whether this process delivers: a replica that does not lead claims nothing.
	// Defaults to leader.Always.
	Leader leader.Leader
	// StopGrace is how long Stop lets attempts in flight finish before it cuts them off (their
	// claims are given back, uncounted). Defaults to 5 s.
	StopGrace time.Duration
	// Jitter returns a random duration in [0, max] for exponential backoff. Defaults to
	// math/rand.
	Jitter func(max time.Duration) time.Duration

	// testControl, when set, is asked after the guard about every connection (tests: refuse
	// whatever is not on this machine, whatever the guard says).
	testControl func(netip.AddrPort) error
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Leader == nil {
		c.Leader = leader.Always{}
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
	}
	if c.PerHost == 0 {
		c.PerHost = 4
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.RescanInterval == 0 {
		c.RescanInterval = time.Minute
	}
	if c.StopGrace == 0 {
		c.StopGrace = 5 * time.Second
	}
	if c.Jitter == nil {
		c.Jitter = func(max time.Duration) time.Duration {
			if max <= 0 {
				return 0
			}
			return rand.N(max + 1)
		}
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("webhook: Store is required")
	case c.Endpoint == nil:
		return errors.New("webhook: Endpoint is required")
	case c.Concurrency < 0 || c.PerHost < 0:
		return errors.New("webhook: Concurrency and PerHost must not be negative")
	case c.Retention < 0 || c.RescanInterval < 0 || c.StopGrace < 0:
		return errors.New("webhook: Retention, RescanInterval and StopGrace must not be negative")
	}
	return nil
}

// ParseCIDRs parses an allowlist: CIDRs ("10.0.0.0/8", "fd00::/8") or single addresses, separated
// by commas or spaces. Errors name the bad entry (CIDRs are not secrets).
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		p, err := ParseCIDR(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseCIDR parses one allowlist entry: a CIDR or a single address.
func ParseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("allowed CIDR %q: %w", s, err)
		}
		// An allowlist is for the private networks of one's receivers. A prefix this broad (say
		// ::ffff:0:0/96, which is all of IPv4) would switch the guard off, metadata address
		// included, which is never what an operator means.
		if u := unmapPrefix(p.Masked()); (u.Addr().Is4() && u.Bits() < 8) || (u.Addr().Is6() && u.Bits() < 7) {
			return netip.Prefix{}, fmt.Errorf("allowed CIDR %q is too broad (it would allow loopback and cloud metadata addresses); list the networks of your receivers", s)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("allowed CIDR %q: not a CIDR or an IP address", s)
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// Dispatcher delivers the outbox. Start it once; Stop it before closing the store.
type Dispatcher struct {
	cfg    Config
	st     store.Store
	clock  clock.Clock
	log    *slog.Logger
	obs    Observer
	client *http.Client

	kick chan struct{} // a wake-up: new deliveries, or a slot freed

	mu       sync.Mutex
	inflight map[string]string // delivery id -> host
	perHost  map[string]int
	// For tests (Idle): whether the loop waits, until when, and whether a wake-up came after its
	// last scan began.
	waiting   bool
	wakeAt    time.Time
	pokes     uint64
	seenPokes uint64
	changed   chan struct{}
	// enqueued is listen's subscription: once closed, a wake-up is on its way.
	enqueued <-chan struct{}

	startOnce, stopOnce sync.Once
	stopLoop            context.CancelFunc
	stopAttempts        context.CancelFunc
	attemptsCtx         context.Context
	loopDone            chan struct{}
	listening           sync.WaitGroup // listen
	attempts            sync.WaitGroup
}

// New returns a dispatcher. Nothing happens until Start.
func New(cfg Config) (*Dispatcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	guard := NewGuard(cfg.AllowCIDRs, cfg.AllowLoopback)
	dial := newDialer(guard, cfg.Resolver, cfg.testControl)
	transport := &http.Transport{
		Proxy:                  nil, // never from the environment: a proxy would dial for us, past the guard
		DialContext:            dial.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxIdleConns:           cfg.Concurrency,
		MaxIdleConnsPerHost:    cfg.PerHost,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: MaxResponseBytes,
		DisableCompression:     true,
	}
	return &Dispatcher{
		cfg:   cfg,
		st:    cfg.Store,
		clock: cfg.Clock,
		log:   cfg.Logger,
		obs:   cfg.Observer,
		client: &http.Client{
			Transport: transport,
			// Redirects are not followed: a 3xx is a failed attempt.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		kick:     make(chan struct{}, 1),
		inflight: make(map[string]string),
		perHost:  make(map[string]int),
		changed:  make(chan struct{}),
		loopDone: make(chan struct{}),
	}, nil
}

// Notify wakes the dispatcher: deliveries were enqueued. It never blocks; plug it into
// engine.Config.WebhookQueued.
func (d *Dispatcher) Notify() {
	d.mu.Lock()
	d.notifyLocked()
	d.mu.Unlock()
}

func (d *Dispatcher) notifyLocked() {
	d.pokes++
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Start starts delivering, beginning with whatever the outbox holds (deliveries enqueued before a
// restart included). It returns at once.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.startOnce.Do(func() {
		base := context.WithoutCancel(ctx)
		var loopCtx context.Context
		loopCtx, d.stopLoop = context.WithCancel(base)
		d.attemptsCtx, d.stopAttempts = context.WithCancel(base)
		go d.loop(loopCtx)
		if d.cfg.Notifier != nil {
			d.listening.Add(1)
			go d.listen(loopCtx)
		}
	})
	return nil
}

// Stop stops claiming deliveries, lets attempts in flight finish for StopGrace, then cuts the
// rest off and gives their claims back (they are not counted as attempts). Idempotent; it does not
// close the store, which must still be open.
func (d *Dispatcher) Stop() {
	d.stopOnce.Do(func() {
		if d.stopLoop == nil {
			return // never started
		}
		d.stopLoop()
		<-d.loopDone
		d.listening.Wait()
		done := make(chan struct{})
		go func() { d.attempts.Wait(); close(done) }()
		grace := time.NewTimer(d.cfg.StopGrace) // a shutdown bound, in wall-clock time like socket timeouts
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C:
			d.stopAttempts()
			<-done
		}
		d.stopAttempts()
		d.client.CloseIdleConnections()
	})
}

// loop claims due deliveries whenever it is woken (new deliveries, a freed slot), when the next
// delivery falls due (a timer on the injected clock) and at least every RescanInterval, while this
// process leads.
func (d *Dispatcher) loop(ctx context.Context) {
	defer close(d.loopDone)
	var lastSweep time.Time
	for {
		now := d.clock.Now()
		d.mu.Lock()
		d.seenPokes = d.pokes
		d.mu.Unlock()
		wait := d.cfg.RescanInterval
		if d.cfg.Leader.Leading() {
			if lastSweep.IsZero() || now.Sub(lastSweep) >= time.Hour {
				d.sweep(ctx, now)
				lastSweep = now
			}
			if next, ok := d.scan(ctx, now); ok {
				if until := next.Sub(d.clock.Now()); until < wait {
					wait = max(until, 0)
				}
			}
		}
		t := d.clock.NewTimer(wait)
		d.setWaiting(true, d.clock.Now().Add(wait))
		select {
		case <-ctx.Done():
		case <-d.kick:
		case <-t.C():
		}
		d.setWaiting(false, time.Time{})
		t.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// listen turns notifications of deliveries enqueued anywhere (notify.Webhooks) into wake-ups of
// the loop, until ctx ends. It subscribes again before waking the loop, so that no notification
// falls between two subscriptions.
func (d *Dispatcher) listen(ctx context.Context) {
	defer d.listening.Done()
	enqueued, release := d.cfg.Notifier.Subscribe(notify.Webhooks)
	d.mu.Lock()
	d.enqueued = enqueued
	d.mu.Unlock()
	for {
		select {
		case <-enqueued:
			next, releaseNext := d.cfg.Notifier.Subscribe(notify.Webhooks)
			release()
			enqueued, release = next, releaseNext
			d.mu.Lock()
			d.enqueued = enqueued
			d.notifyLocked()
			d.mu.Unlock()
		case <-ctx.Done():
			release()
			return
		}
	}
}

// scan claims as many due deliveries as the bounds allow and starts their attempts. It returns
// when the next delivery not yet due falls due.
func (d *Dispatcher) scan(ctx context.Context, now time.Time) (time.Time, bool) {
	d.mu.Lock()
	free := d.cfg.Concurrency - len(d.inflight)
	limits := make(map[string]int, len(d.perHost))
	for host, n := range d.perHost {
		limits[host] = d.cfg.PerHost - n
	}
	exclude := make([]string, 0, len(d.inflight))
	for id := range d.inflight {
		exclude = append(exclude, id)
	}
	d.mu.Unlock()
	if free > 0 {
		claimed, err := d.st.ClaimDeliveries(ctx, store.ClaimDeliveriesParams{
			Now: now, Limit: free, PerHost: d.cfg.PerHost, HostLimits: limits, Exclude: exclude,
			Lease: func(endpoint string) time.Duration { return d.schedule(endpoint).Timeout + leaseMargin },
		})
		if err != nil && ctx.Err() == nil {
			d.log.Error("webhooks: claim deliveries", "err", err)
		}
		for _, dl := range claimed {
			d.mu.Lock()
			d.inflight[dl.ID] = dl.Host
			d.perHost[dl.Host]++
			d.attempts.Add(1)
			d.mu.Unlock()
			go d.attempt(dl)
		}
	}
	next, ok, err := d.st.NextDeliveryDue(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("webhooks: next delivery", "err", err)
		}
		return time.Time{}, false
	}
	return next, ok
}

// sweep deletes the deliveries that finished more than Retention ago.
func (d *Dispatcher) sweep(ctx context.Context, now time.Time) {
	for {
		n, err := d.st.DeleteDeliveries(ctx, store.DeleteDeliveriesParams{Before: now.Add(-d.cfg.Retention), Limit: 1000})
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("webhooks: delete old deliveries", "err", err)
			}
			return
		}
		if n < 1000 {
			return
		}
	}
}

// Sweep deletes the deliveries that finished more than Retention ago (the loop does it hourly).
func (d *Dispatcher) Sweep(ctx context.Context) { d.sweep(ctx, d.clock.Now()) }

func (d *Dispatcher) setWaiting(waiting bool, wakeAt time.Time) {
	d.mu.Lock()
	d.waiting, d.wakeAt = waiting, wakeAt
	d.signalLocked()
	d.mu.Unlock()
}

func (d *Dispatcher) signalLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// done forgets a finished attempt and wakes the loop: a slot is free.
func (d *Dispatcher) done(dl spool.WebhookDelivery) {
	d.mu.Lock()
	delete(d.inflight, dl.ID)
	if d.perHost[dl.Host]--; d.perHost[dl.Host] <= 0 {
		delete(d.perHost, dl.Host)
	}
	d.notifyLocked()
	d.signalLocked()
	d.mu.Unlock()
	d.attempts.Done()
}

// settings returns the delivery settings of an endpoint: its schedule and signing secrets.
func (d *Dispatcher) settings(endpoint string) (spool.WebhookSchedule, [][]byte) {
	ep, ok := d.cfg.Endpoint(endpoint)
	if !ok {
		return spool.DefaultWebhookSchedule(), nil
	}
	secrets, err := spool.ParseWebhookSecrets(ep.WebhookSecret)
	if err != nil {
		// Validated when the endpoint was stored; sign with nothing rather than fail.
		d.log.Error("webhooks: endpoint has an unusable webhookSecret; sending unsigned", "endpoint", endpoint)
		secrets = nil
	}
	return ep.WebhookSchedule(), secrets
}

// schedule is settings without the secrets: the claim's lease asks it inside the store's
// transaction.
func (d *Dispatcher) schedule(endpoint string) spool.WebhookSchedule {
	ep, ok := d.cfg.Endpoint(endpoint)
	if !ok {
		return spool.DefaultWebhookSchedule()
	}
	return ep.WebhookSchedule()
}

// attempt makes one attempt of a claimed delivery and records it.
func (d *Dispatcher) attempt(dl spool.WebhookDelivery) {
	defer d.done(dl)
	ctx := d.attemptsCtx
	sched, secrets := d.settings(dl.Endpoint)
	at := d.clock.Now()
	start := time.Now() // the attempt's duration is measured, not scheduled
	res := d.send(ctx, dl, sched.Timeout, secrets, at)
	took := time.Since(start)
	if ctx.Err() != nil {
		// Stopped mid-attempt: give the claim back, uncounted; it is due again at once.
		d.record(dl, store.RecordAttemptParams{ID: dl.ID, Lease: dl.Lease, State: spool.DeliveryPending,
			NextAttemptAt: at, Now: at})
		return
	}
	n := dl.Attempts + 1
	now := d.clock.Now()
	p := store.RecordAttemptParams{
		ID: dl.ID, Lease: dl.Lease, Now: now,
		Attempt: &spool.DeliveryAttempt{At: at, StatusCode: res.status, Error: res.err, Duration: took},
	}
	switch {
	case res.outcome == OutcomeSuccess:
		p.State = spool.DeliveryDelivered
	case n >= sched.Attempts:
		p.State = spool.DeliveryFailed
	default:
		p.State = spool.DeliveryPending
		p.NextAttemptAt = now.Add(Backoff(sched, n, d.cfg.Jitter))
	}
	recorded := d.record(dl, p)
	d.obs.WebhookAttempt(dl.Endpoint, res.outcome, took)
	if !recorded {
		return
	}
	switch p.State {
	case spool.DeliveryDelivered:
		d.obs.WebhookFinished(dl.Endpoint, p.State)
		d.log.Debug("webhook delivered", "delivery", dl.ID, "job", dl.JobID, "endpoint", dl.Endpoint,
			"host", dl.Host, "attempt", n, "status", res.status)
	case spool.DeliveryFailed:
		d.obs.WebhookFinished(dl.Endpoint, p.State)
		d.log.Warn("webhook delivery failed; no attempts left", "delivery", dl.ID, "job", dl.JobID,
			"endpoint", dl.Endpoint, "host", dl.Host, "attempts", n, "lastError", res.err)
	default:
		d.log.Debug("webhook attempt failed; will retry", "delivery", dl.ID, "job", dl.JobID, "endpoint", dl.Endpoint,
			"host", dl.Host, "attempt", n, "error", res.err, "next", p.NextAttemptAt)
	}
}

// record writes an attempt's outcome. The store write is not tied to the attempt's context: the
// outcome of an attempt that was made must be kept even while stopping.
func (d *Dispatcher) record(dl spool.WebhookDelivery, p store.RecordAttemptParams) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.st.RecordAttempt(ctx, p); err != nil {
		// ErrConflict: another claim took over (our lease ran out). ErrClosed: shutting down
		// hard. Either way the delivery is due again and will be retried: at least once.
		d.log.Warn("webhooks: could not record an attempt", "delivery", dl.ID, "job", dl.JobID, "err", err)
		return false
	}
	return true
}

// Backoff is the wait after the attempt-th failed attempt (1-based) of a schedule: Delay for
// fixed backoff; for exponential, Delay doubled after each attempt, capped at MaxDelay, then drawn
// at random from its upper half (jitter(max) returns a duration in [0, max]).
func Backoff(s spool.WebhookSchedule, attempt int, jitter func(max time.Duration) time.Duration) time.Duration {
	if s.Backoff != spool.WebhookBackoffExponential {
		return s.Delay
	}
	d := s.Delay
	for i := 1; i < attempt && d < s.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, s.MaxDelay)
	half := d / 2
	return d - half + min(max(jitter(half), 0), half)
}

type result struct {
	status  int
	err     string
	outcome string
}

// send POSTs the payload once. The whole attempt (connection, TLS, request, answer headers and up
// to MaxResponseBytes of body) is bounded by timeout.
func (d *Dispatcher) send(ctx context.Context, dl spool.WebhookDelivery, timeout time.Duration, secrets [][]byte, at time.Time) result {
	if err := spool.ValidateWebhookURL(dl.URL); err != nil {
		return result{err: "refused: " + spool.ErrorMessage(err), outcome: OutcomeRefused}
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, dl.URL, bytes.NewReader(dl.Payload))
	if err != nil {
		return result{err: "refused: the URL cannot be requested", outcome: OutcomeRefused}
	}
	ts := at.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Spool-Webhook/1")
	req.Header[HeaderID] = []string{dl.ID}
	req.Header[HeaderTimestamp] = []string{strconv.FormatInt(ts, 10)}
	if len(secrets) > 0 {
		req.Header[HeaderSignature] = []string{Sign(secrets, dl.ID, ts, dl.Payload)}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return classify(err, actx, timeout)
	}
	// Read a bounded part of the answer (so that the connection can be reused when it is short),
	// then close: a longer answer is cut off with the connection.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseBytes))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return result{status: code, outcome: OutcomeSuccess}
	case code >= 300 && code < 400:
		return result{status: code, err: fmt.Sprintf("HTTP %d: redirects are not followed", code), outcome: OutcomeHTTPError}
	default:
		return result{status: code, err: fmt.Sprintf("HTTP %d", code), outcome: OutcomeHTTPError}
	}
}

// classify turns a failed request into an attempt's error. The URL (it may carry a token) is
// left out of the message.
func classify(err error, actx context.Context, timeout time.Duration) result {
	msg := err.Error()
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		msg = urlErr.Err.Error()
	}
	msg = strings.ReplaceAll(msg, "\n", "; ") // every address tried, for a name with several
	var refused *RefusedError
	if errors.As(err, &refused) {
		return result{err: msg, outcome: OutcomeRefused}
	}
	if errors.Is(actx.Err(), context.DeadlineExceeded) {
		return result{err: fmt.Sprintf("timed out after %s", timeout), outcome: OutcomeTimeout}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return result{err: fmt.Sprintf("timed out after %s", timeout), outcome: OutcomeTimeout}
	}
	return result{err: msg, outcome: OutcomeNetworkError}
}
