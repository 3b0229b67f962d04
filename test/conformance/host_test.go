// Package conformance runs the built plugin.wasm on the real http-wasm host (http-wasm-host-go's
// handler/nethttp on wazero, at the versions Traefik pins) configured the way Traefik configures a
// local Wasm plugin, between a real HTTP server and a reverse proxy to an upstream that plays
// Traefik's sticky balancer. Views, learned and event files are written and read by
// fixtures.ts (lib/view), never encoded here.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/http-wasm/http-wasm-host-go/api"
	"github.com/http-wasm/http-wasm-host-go/handler"
	wasm "github.com/http-wasm/http-wasm-host-go/handler/nethttp"
	"github.com/tetratelabs/wazero"
	wazeroapi "github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

var repoRoot = flag.String("repo", "../..", "repository root (plugin/build/plugin.wasm, test/conformance/fixtures.ts)")

const (
	// The plugin's default viewDir: the temp shared directory is mounted there, as in deployments.
	guestViewDir = "/var/run/mcp-affinity"
	cookieName   = "_mcp_backend"
	// What the balancer (and the plugin's repair, by default) sets.
	cookieAttrs = "; Path=/; HttpOnly; Secure; SameSite=Strict"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The guest pool of a middleware is a sync.Pool: with one P and no GC, sequential requests on
	// one middleware are served by its one eager instance, so a row's `d` count is flushed by the
	// row's own follow-up request. Each check asserts that premise (instances == 1).
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(-1)
	os.Exit(m.Run())
}

// ---------------------------------------------------------------- the host, as Traefik builds it

// pluginHost holds what Traefik's wasm middleware builder holds for one plugin: the binary and one
// compilation cache shared by every middleware built from it.
type pluginHost struct {
	code  []byte
	cache wazero.CompilationCache
}

var (
	hostOnce   sync.Once
	sharedHost *pluginHost
	hostErr    error
)

func plugin(t testing.TB) *pluginHost {
	hostOnce.Do(func() {
		path := filepath.Join(*repoRoot, "plugin", "build", "plugin.wasm")
		code, err := os.ReadFile(path)
		if err != nil {
			hostErr = fmt.Errorf("%s: %w (run `npm run build`)", path, err)
			return
		}
		sharedHost = &pluginHost{code: code, cache: wazero.NewCompilationCache()}
	})
	if hostErr != nil {
		t.Fatal(hostErr)
	}
	return sharedHost
}

// logSink is the host logger: like Traefik's wasm logger every level is enabled.
type logSink struct {
	mu    sync.Mutex
	lines []logLine
}
type logLine struct {
	level   api.LogLevel
	message string
}

func (l *logSink) IsEnabled(api.LogLevel) bool { return true }
func (l *logSink) Log(_ context.Context, level api.LogLevel, message string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, logLine{level, message})
}
func (l *logSink) all() []logLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]logLine(nil), l.lines...)
}

// countingRuntime is the runtime Traefik hands the middleware, counting guest instantiations (the
// middleware creates an instance whenever its pool is empty).
type countingRuntime struct {
	wazero.Runtime
	instances *atomic.Int32
	modules   *moduleList
}

// moduleList keeps every guest instance the middleware made, to read their memory sizes.
type moduleList struct {
	mu   sync.Mutex
	list []wazeroapi.Module
}

func (r countingRuntime) InstantiateModule(ctx context.Context, m wazero.CompiledModule, c wazero.ModuleConfig) (wazeroapi.Module, error) {
	r.instances.Add(1)
	mod, err := r.Runtime.InstantiateModule(ctx, m, c)
	if err == nil && mod.Memory() != nil {
		r.modules.mu.Lock()
		r.modules.list = append(r.modules.list, mod)
		r.modules.mu.Unlock()
	}
	return mod, err
}

type middleware struct {
	handler   http.Handler
	logs      *logSink
	instances *atomic.Int32
	modules   *moduleList
	close     func()
}

// memoryPages is the linear memory of every guest instance made so far, in 64 KiB pages.
func (m *middleware) memoryPages() []uint32 {
	m.modules.mu.Lock()
	defer m.modules.mu.Unlock()
	out := make([]uint32, 0, len(m.modules.list))
	for _, mod := range m.modules.list {
		out = append(out, mod.Memory().Size()/65536)
	}
	return out
}

// mountsFS turns settings.mounts (`host`, `host:guest`, either with a `:ro` suffix) into wazero
// directory mounts, with Traefik's rules.
func mountsFS(mounts []string) (wazero.FSConfig, error) {
	fs := wazero.NewFSConfig()
	for _, m := range mounts {
		spec, readOnly := strings.CutSuffix(m, ":ro")
		parts := strings.Split(spec, ":")
		if len(parts) > 2 {
			return nil, fmt.Errorf("invalid directory %q", m)
		}
		host, guest := parts[0], parts[len(parts)-1]
		if readOnly {
			fs = fs.WithReadOnlyDirMount(host, guest)
		} else {
			fs = fs.WithDirMount(host, guest)
		}
	}
	return fs, nil
}

// newMiddleware builds one middleware the way Traefik v3.7.9 does for a local Wasm plugin
// (pkg/plugins/middlewarewasm.go and wasip.go): a runtime on the plugin's compilation cache with
// WASI preview1 instantiated first (the plugin has no sockets extension), a module config with the
// real wall clock and `_start`/`_initialize` as start functions, settings.mounts as directory
// mounts, the middleware's config as encoding/json marshals it, handed to nethttp.NewMiddleware.
func (p *pluginHost) newMiddleware(t testing.TB, mounts []string, config map[string]any, next http.Handler) *middleware {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(p.cache))
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		t.Fatalf("wasi: %v", err)
	}
	moduleConfig := wazero.NewModuleConfig().WithSysWalltime().WithStartFunctions("_start", "_initialize")
	if len(mounts) > 0 {
		fs, err := mountsFS(mounts)
		if err != nil {
			t.Fatal(err)
		}
		moduleConfig = moduleConfig.WithFSConfig(fs)
	}
	data, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logSink{}
	instances := &atomic.Int32{}
	modules := &moduleList{}
	counted := countingRuntime{Runtime: rt, instances: instances, modules: modules}
	mw, err := wasm.NewMiddleware(ctx, p.code,
		handler.ModuleConfig(moduleConfig),
		handler.Logger(logs),
		handler.GuestConfig(data),
		handler.Runtime(func(context.Context) (wazero.Runtime, error) { return counted, nil }),
	)
	if err != nil {
		t.Fatalf("creating middleware: %v", err)
	}
	m := &middleware{handler: mw.NewHandler(ctx, next), logs: logs, instances: instances, modules: modules}
	m.close = func() { _ = mw.Close(ctx) }
	t.Cleanup(m.close)
	return m
}

// ---------------------------------------------------------------- cluster, balancer, edge

// cookies maps a test-cluster node name (a, b, c, d, gone) to its sticky cookie value, as
// fixtures.ts gives them.
type cookies map[string]string

func (c cookies) of(t testing.TB, name string) string {
	t.Helper()
	v, ok := c[name]
	if !ok {
		t.Fatalf("no node %q", name)
	}
	return v
}

var nodeRef = regexp.MustCompile(`@(\w+)`)

// expand replaces `@x` with the Cookie pair naming node x.
func (c cookies) expand(t testing.TB, s string) string {
	return nodeRef.ReplaceAllStringFunc(s, func(m string) string { return cookieName + "=" + c.of(t, m[1:]) })
}

// received is what the upstream got: the request after the plugin and the reverse proxy.
type received struct {
	method  string
	header  http.Header
	body    []byte
	chunked bool
	length  int64  // Content-Length (-1: unknown)
	backend string // the server the balancer chose (cookie value)
	set     string // the balancer's Set-Cookie when it had to choose ("" when the cookie stuck)
}

// upstream plays Traefik's sticky weighted-round-robin service: a request whose first
// `_mcp_backend` cookie names a server goes there; any other gets `pick` and a Set-Cookie.
type upstream struct {
	srv     *httptest.Server
	servers map[string]bool
	pick    string
	reply   func(w http.ResponseWriter, r *http.Request, body []byte)
	mu      sync.Mutex
	got     []received
}

func newUpstream(t testing.TB, servers []string, pick string) *upstream {
	u := &upstream{servers: map[string]bool{}, pick: pick}
	for _, s := range servers {
		u.servers[s] = true
	}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec := received{method: r.Method, header: r.Header.Clone(), body: body, chunked: len(r.TransferEncoding) > 0, length: r.ContentLength}
	u.mu.Lock()
	pick := u.pick
	u.mu.Unlock()
	if c, err := r.Cookie(cookieName); err == nil && u.servers[c.Value] {
		rec.backend = c.Value
	} else {
		rec.backend = pick
		rec.set = cookieName + "=" + pick + cookieAttrs
		w.Header().Add("Set-Cookie", rec.set)
	}
	u.mu.Lock()
	u.got = append(u.got, rec)
	u.mu.Unlock()
	if u.reply != nil {
		u.reply(w, r, body)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{}}`)
}

func (u *upstream) setPick(cookie string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.pick = cookie
}

// describe prints received requests for a failure message.
func describe(rs []received) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "[%s Cookie=%q Mcp-Session-Id=%q body=%d bytes length=%d backend=%s set=%q] ",
			r.method, r.header.Values("Cookie"), r.header.Values("Mcp-Session-Id"), len(r.body), r.length, r.backend, r.set)
	}
	return b.String()
}

func (u *upstream) requests() []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]received(nil), u.got...)
}

// edge is Traefik's entry point: an HTTP server whose router runs the middleware, whose next
// handler is a reverse proxy to the upstream. onRelease runs when the middleware first writes the
// response to the client connection.
type edge struct {
	srv       *httptest.Server
	onRelease func()
}

func newEdge(t testing.TB, mw *middleware) *edge {
	e := &edge{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw.handler.ServeHTTP(&releaseProbe{ResponseWriter: w, onRelease: e.onRelease}, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func proxyTo(t testing.TB, u *upstream) http.Handler {
	target, err := url.Parse(u.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}}
}

type releaseProbe struct {
	http.ResponseWriter
	onRelease func()
	released  bool
}

func (p *releaseProbe) release() {
	if !p.released {
		p.released = true
		if p.onRelease != nil {
			p.onRelease()
		}
	}
}
func (p *releaseProbe) WriteHeader(code int) { p.release(); p.ResponseWriter.WriteHeader(code) }
func (p *releaseProbe) Write(b []byte) (int, error) {
	p.release()
	return p.ResponseWriter.Write(b)
}
func (p *releaseProbe) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// request is a client request to the edge.
type request struct {
	method     string   // default POST
	sessionIDs []string // each an Mcp-Session-Id line
	cookies    []string // Cookie lines; `@x` names node x
	body       []byte   // POST default: a tools/list call
	chunked    bool     // no Content-Length
	header     http.Header
}

var toolsListBody = []byte(`{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}`)

// sent is the request as sent: method, Cookie lines expanded, body.
type sent struct {
	method  string
	cookies []string
	body    []byte
}

type response struct {
	status int
	header http.Header
	body   []byte
}

var client = &http.Client{Transport: &http.Transport{DisableCompression: true}}

func (e *edge) do(t testing.TB, c cookies, r request) (sent, response) {
	t.Helper()
	s := sent{method: r.method}
	if s.method == "" {
		s.method = http.MethodPost
	}
	if s.method == http.MethodPost {
		s.body = r.body
		if s.body == nil {
			s.body = toolsListBody
		}
	}
	for _, line := range r.cookies {
		s.cookies = append(s.cookies, c.expand(t, line))
	}
	var body io.Reader
	if s.body != nil {
		body = bytes.NewReader(s.body)
		if r.chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
	}
	req, err := http.NewRequest(s.method, e.srv.URL+"/mcp", body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if s.method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.sessionIDs != nil {
		req.Header["Mcp-Session-Id"] = r.sessionIDs
	}
	if s.cookies != nil {
		req.Header["Cookie"] = s.cookies
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("response body: %v", err)
	}
	return s, response{status: res.StatusCode, header: res.Header, body: got}
}

// ---------------------------------------------------------------- fixtures.ts

type nodeSpec struct {
	ID                int    `json:"id"`
	Node              string `json:"node"` // a test-cluster node name`
	State             string `json:"state"`
	RetryAfterSeconds int    `json:"retryAfterSeconds,omitempty"`
}
type sessionSpec struct {
	ID     string `json:"id"`
	Node   int    `json:"node"`
	Closed bool   `json:"closed,omitempty"`
}

// viewSpec is a view for fixtures.ts to publish with lib/view.
type viewSpec struct {
	Base           string        `json:"base,omitempty"` // "cluster": the fixture's CLUSTER_VIEW
	Epoch          int           `json:"epoch,omitempty"`
	ShardEpoch     int           `json:"shardEpoch,omitempty"`
	PublishedAgoMs int64         `json:"publishedAgoMs,omitempty"`
	Nodes          []nodeSpec    `json:"nodes,omitempty"`
	Sessions       []sessionSpec `json:"sessions,omitempty"`
	Boots          []bootSpec    `json:"boots,omitempty"` // added to the base's
	ShardBits      int           `json:"shardBits,omitempty"`
	Filler         int           `json:"filler,omitempty"` // more sessions (`filler-<i>`) over the nodes
}

// bootSpec is a `boot` line: a node incarnation that routing tokens are checked against.
type bootSpec struct {
	Node              string `json:"node"`
	BootTag           string `json:"bootTag"`
	State             string `json:"state"`
	RetryAfterSeconds int    `json:"retryAfterSeconds,omitempty"`
}

// tokenSpec is a session id with a routing token for fixtures.ts to make with lib/token: minted
// by the node library, or wrapped by the plugin around the server's own id.
type tokenSpec struct {
	Kind    string `json:"kind"` // "minted" | "wrapped"
	Node    string `json:"node"`
	BootTag string `json:"bootTag"`
	Inner   string `json:"inner,omitempty"`
}

func fixtures(t testing.TB, mode string, input any, output any) {
	t.Helper()
	in, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	nodeBin := os.Getenv("NODE")
	if nodeBin == "" {
		nodeBin = "node"
	}
	cmd := exec.Command(nodeBin, "--import", "tsx", filepath.Join("test", "conformance", "fixtures.ts"), mode)
	cmd.Dir = *repoRoot
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fixtures.ts %s: %v\n%s", mode, err, stderr.String())
	}
	if err := json.Unmarshal(out, output); err != nil {
		t.Fatalf("fixtures.ts %s output: %v\n%s", mode, err, out)
	}
}

type written struct {
	Cookies map[string]string `json:"cookies"`
	Hashes  map[string]string `json:"hashes"`
	Tokens  map[string]string `json:"tokens"`
}

// writeViews publishes views (directory -> spec) and returns the node cookies, the hashes of
// sessionIDs and the session ids made for tokens (name -> id).
func writeViews(t testing.TB, views map[string]*viewSpec, sessionIDs []string, tokens map[string]tokenSpec) (cookies, map[string]string, map[string]string) {
	t.Helper()
	if sessionIDs == nil {
		sessionIDs = []string{}
	}
	if tokens == nil {
		tokens = map[string]tokenSpec{}
	}
	var w written
	fixtures(t, "write", map[string]any{"views": views, "sessionIds": sessionIDs, "tokens": tokens}, &w)
	return w.Cookies, w.Hashes, w.Tokens
}

type learnedEvent struct {
	ID     string `json:"id"`
	Hash   string `json:"hash"`
	Cookie string `json:"cookie"`
}

// dirState is what the plugin left in a shared directory, decoded by lib/view.
type dirState struct {
	Decisions      map[string]int    `json:"decisions"`
	Learned        []learnedEvent    `json:"learned"`
	Closed         []learnedEvent    `json:"closed"`
	Dropped        int               `json:"dropped"`
	LearnedFiles   map[string]string `json:"learnedFiles"`
	InvalidLearned []string          `json:"invalidLearned"`
}

// readDirs decodes what the plugin left in dirs, and hashes sessionIDs (ids the client was given).
func readDirs(t testing.TB, dirs []string, sessionIDs ...string) (map[string]dirState, map[string]string) {
	t.Helper()
	if sessionIDs == nil {
		sessionIDs = []string{}
	}
	var out struct {
		Dirs   map[string]dirState `json:"dirs"`
		Hashes map[string]string   `json:"hashes"`
	}
	fixtures(t, "read", map[string]any{"dirs": dirs, "sessionIds": sessionIDs}, &out)
	return out.Dirs, out.Hashes
}

// ---------------------------------------------------------------- small checks

func mount(dir string) []string { return []string{dir + ":" + guestViewDir} }

// pluginConfig is the middleware's config as the file provider gives it (strings), over a base
// that keeps fixtures fresh on a loaded machine and flushes decision counts quickly.
func pluginConfig(over map[string]any) map[string]any {
	c := map[string]any{"staleAfterMs": "600000", "eventFlushMs": "100"}
	for k, v := range over {
		c[k] = v
	}
	return c
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkLogs: no log line names a session id in clear, and none is an error unless allowed.
func checkLogs(t testing.TB, mw *middleware, ids []string) {
	t.Helper()
	for _, l := range mw.logs.all() {
		if l.level == api.LogLevelError {
			t.Errorf("plugin logged an error: %s", l.message)
		}
		for _, id := range ids {
			if id != "" && len(id) >= 4 && strings.Contains(l.message, id) {
				t.Errorf("a log line carries session id %q in clear: %s", id, l.message)
			}
		}
	}
}
