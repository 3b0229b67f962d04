package conformance

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestInstanceMemory: every guest instance stays within its first 64 KiB page on the real host
// (wazero, as Traefik configures it), whatever it serves: every open SSE stream holds an instance
// in Traefik. Each kind of request is sent 2,000 times in a row (the garbage of many requests
// between two collections must fit), then many at once, held by the upstream, so the pool makes
// fresh instances and each serves that kind first. The TypeScript test host never showed the
// growth this found: 15 wrapped-session POSTs in a row grew an instance to two pages while the
// plugin collected every 16 requests.
func TestInstanceMemory(t *testing.T) {
	host := plugin(t)
	dir := t.TempDir()
	views := map[string]*viewSpec{dir: {
		Nodes: []nodeSpec{{ID: 1, Node: "a", State: "up"}, {ID: 2, Node: "b", State: "up"}},
		Boots: []bootSpec{{Node: "a", BootTag: "0badcafe", State: "up"}, {Node: "b", BootTag: "00000000", State: "up"}},
	}}
	cookies, _, tokens := writeViews(t, views, nil, map[string]tokenSpec{
		"minted":  {Kind: "minted", Node: "a", BootTag: "0badcafe"},
		"wrapped": {Kind: "wrapped", Node: "b", BootTag: "00000000", Inner: "server-own-id-0123456789"},
	})
	// The view holds both sessions' records among many others.
	sessions := []sessionSpec{{ID: tokens["minted"], Node: 1}, {ID: tokens["wrapped"], Node: 2}}
	views[dir].Sessions = sessions
	writeViews(t, views, nil, nil)

	var hold sync.WaitGroup
	release := make(chan struct{})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	mw := host.newMiddleware(t, mount(dir), pluginConfig(nil), next)
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
		name  string
		build func() *http.Request
	}{
		{"initialize", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(initializeBody(t, 600)))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set(sessionHeader, "new-session")
			return r
		}},
		{"GET stream, minted id", func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
			r.Header.Set("Accept", "text/event-stream")
			r.Header.Set("Mcp-Session-Id", tokens["minted"])
			return r
		}},
		{"POST, minted id", post(tokens["minted"], "")},
		{"POST, wrapped id", post(tokens["wrapped"], "")},
		{"POST, wrapped id, cookie of another node (repaired)", post(tokens["wrapped"], cookieName+"="+cookies["a"]+"; theme=dark")},
	}
	check := func(t *testing.T) {
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
				mw.handler.ServeHTTP(httptest.NewRecorder(), k.build())
			}
			check(t)
		})
	}
	// At once: fresh instances, each serving this kind first.
	const concurrent = 12
	for _, k := range kinds {
		t.Run("12 at once: "+k.name, func(t *testing.T) {
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
			check(t)
		})
	}
	if n := mw.instances.Load(); n < concurrent {
		t.Errorf("%d instances: the requests at once did not each get one", n)
	}
}
