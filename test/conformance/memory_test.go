package conformance

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestInstanceMemory: every guest instance stays within its first 64 KiB page on the real host
// (wazero, as Traefik configures it), whatever it serves: every open SSE stream holds an instance
// in Traefik. Each kind of request is sent 2,000 times in a row (the garbage of many requests
// between two collections must fit), then many at once, held by the upstream, so the pool makes
// fresh instances and each serves that kind first. The configuration is traefik/dynamic.yml's. The
// TypeScript test host never showed the growth this found: parsing that configuration grew every
// fresh instance to a second page before its first request (a string built a character at a
// time), and 15 wrapped-session POSTs in a row grew one while the plugin collected every 16. It
// runs on a small view and on one the size of a large deployment's (shards of a million sessions,
// a meta of 16 nodes with the previous boots the sidecar keeps), which grew every instance until
// the plugin read both through one buffer that never grows.
func TestInstanceMemory(t *testing.T) {
	small := func() *viewSpec {
		return &viewSpec{
			Nodes: []nodeSpec{{ID: 1, Node: "a", State: "up"}, {ID: 2, Node: "b", State: "up"}},
			Boots: []bootSpec{{Node: "a", BootTag: "0badcafe", State: "up"}, {Node: "b", BootTag: "00000000", State: "up"}},
		}
	}
	t.Run("a small view", func(t *testing.T) { instanceMemory(t, small()) })
	// Shards of 250 records (6 KiB: a million sessions over 4,096 shards) and a meta of 16 nodes
	// with eight previous boots each (what the sidecar keeps): instances must not grow with the view.
	t.Run("shards of a million sessions, 16 nodes of 9 boots", func(t *testing.T) {
		v := small()
		v.ShardBits = 4
		v.Filler = 16 * 250
		for i := 1; i <= 14; i++ {
			v.Nodes = append(v.Nodes, nodeSpec{ID: 2 + i, Node: fmt.Sprintf("n%d", i), State: "up"})
			v.Boots = append(v.Boots, bootSpec{Node: fmt.Sprintf("n%d", i), BootTag: fmt.Sprintf("%08x", 0x10000+i), State: "up"})
		}
		for _, n := range v.Nodes {
			for b := 1; b <= 8; b++ {
				v.Boots = append(v.Boots, bootSpec{Node: n.Node, BootTag: fmt.Sprintf("%08x", 0xd0000000+n.ID*16+b), State: "gone"})
			}
		}
		instanceMemory(t, v)
	})
}

// untokenedID is a session id without a routing token (a server's own id the edge did not wrap):
// only the view's shard can route it.
const untokenedID = "server-own-id-without-token-0123"

func instanceMemory(t *testing.T, spec *viewSpec) {
	host := plugin(t)
	dir := t.TempDir()
	views := map[string]*viewSpec{dir: spec}
	cookies, _, tokens := writeViews(t, views, nil, map[string]tokenSpec{
		"minted":  {Kind: "minted", Node: "a", BootTag: "0badcafe"},
		"wrapped": {Kind: "wrapped", Node: "b", BootTag: "00000000", Inner: "server-own-id-0123456789"},
	})
	// The view holds the three sessions' records (among the filler's, if any).
	sessions := []sessionSpec{{ID: tokens["minted"], Node: 1}, {ID: tokens["wrapped"], Node: 2}, {ID: untokenedID, Node: 1}}
	views[dir].Sessions = sessions
	writeViews(t, views, nil, nil)

	var hold sync.WaitGroup
	release := make(chan struct{})
	var lastCookie atomic.Value // what the upstream got last: the pin of a lookup
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastCookie.Store(r.Header.Get("Cookie"))
		_, _ = io.Copy(io.Discard, r.Body)
		hold.Done()
		<-release
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, ": ping\n\n")
			return
		}
		initializeReply(w, r, nil)
	})
	mw := host.newMiddleware(t, mount(dir), traefikTemplateConfig, next)
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"counter","arguments":{}}}`
	post := func(id, cookie string) func() *http.Request {
		return func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(call))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept", "application/json, text/event-stream")
			r.Header.Set("Mcp-Session-Id", id)
			r.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			if cookie != "" {
				r.Header.Set("Cookie", cookie)
			}
			return r
		}
	}
	kinds := []struct {
		name     string
		build    func() *http.Request
		pinnedTo string // the node the request must reach
	}{
		{name: "initialize", build: func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(initializeBody(t, 600)))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set(sessionHeader, "new-session")
			return r
		}},
		{name: "GET stream, minted id", build: func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
			r.Header.Set("Accept", "text/event-stream")
			r.Header.Set("Mcp-Session-Id", tokens["minted"])
			return r
		}},
		{name: "GET stream, minted id, as Traefik passes it", build: func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:43111/mcp", nil)
			r.Header.Set("Accept", "text/event-stream")
			r.Header.Set("Mcp-Session-Id", tokens["minted"])
			r.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			r.Header.Set("Connection", "close")
			r.Header.Set("X-Forwarded-For", "127.0.0.1")
			r.Header.Set("X-Forwarded-Host", "127.0.0.1:43111")
			r.Header.Set("X-Forwarded-Port", "43111")
			r.Header.Set("X-Forwarded-Proto", "http")
			r.Header.Set("X-Forwarded-Server", "devbox")
			r.Header.Set("X-Real-Ip", "127.0.0.1")
			return r
		}},
		{name: "POST, minted id", build: post(tokens["minted"], "")},
		{name: "POST, wrapped id", build: post(tokens["wrapped"], "")},
		{name: "POST, wrapped id, cookie of another node (repaired)", build: post(tokens["wrapped"], cookieName+"="+cookies["a"]+"; theme=dark")},
		{name: "POST, id without a token", build: post(untokenedID, ""), pinnedTo: "a"},
	}
	check := func(t *testing.T, mw *middleware) {
		t.Helper()
		for i, p := range mw.memoryPages() {
			if p != 1 {
				t.Errorf("instance %d has %d pages of 64 KiB", i, p)
			}
		}
	}
	// In a row, on the one instance the pool holds (GOMAXPROCS 1, no Go GC: TestMain).
	free := make(chan struct{})
	close(free)
	for _, k := range kinds {
		t.Run("2,000 in a row: "+k.name, func(t *testing.T) {
			release = free
			for i := 0; i < 2000; i++ {
				hold.Add(1)
				rec := httptest.NewRecorder()
				mw.handler.ServeHTTP(rec, k.build())
				if rec.Code != http.StatusOK {
					t.Fatalf("request %d: %d from the edge (%s): the upstream answers 200", i, rec.Code, rec.Header().Get("Mcp-Affinity"))
				}
				if k.pinnedTo != "" && lastCookie.Load() != cookieName+"="+cookies[k.pinnedTo] {
					t.Fatalf("request %d: the upstream got Cookie %q: not pinned to node %s by the view's record", i, lastCookie.Load(), k.pinnedTo)
				}
			}
			check(t, mw)
		})
	}
	// At once, on a new middleware: fresh instances, each serving this kind first.
	const concurrent = 12
	for _, k := range kinds {
		t.Run("12 at once: "+k.name, func(t *testing.T) {
			mw := host.newMiddleware(t, mount(dir), traefikTemplateConfig, next)
			release = make(chan struct{})
			hold.Add(concurrent)
			var done sync.WaitGroup
			for i := 0; i < concurrent; i++ {
				done.Add(1)
				go func() {
					defer done.Done()
					mw.handler.ServeHTTP(httptest.NewRecorder(), k.build())
				}()
			}
			hold.Wait()
			close(release)
			done.Wait()
			check(t, mw)
			if n := mw.instances.Load(); n < concurrent {
				t.Errorf("%d instances: the requests at once did not each get one", n)
			}
		})
	}
}

// traefikTemplateConfig is the plugin's configuration in traefik/dynamic.yml, as the file provider gives it.
var traefikTemplateConfig = map[string]any{
	"viewDir": guestViewDir, "cookieName": cookieName, "cookiePath": "/", "cookieSecure": "true",
	"cookieHttpOnly": "true", "cookieSameSite": "Strict", "onMisroute": "pin", "onOwnerDown": "unavailable",
	"retryAfterSeconds": "2", "staleAfterMs": "600000", "logLevel": "info",
}
