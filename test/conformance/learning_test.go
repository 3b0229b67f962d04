package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Learning from initialize responses and request-body handling (docs/plugin.md "Learning").

const initResult = `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"n","version":"1"}}}`

// sessionHeader tells the upstream which session id an initialize creates.
const sessionHeader = "X-Test-Session"

// initializeReply answers an initialize with a new session (the id the client named in
// sessionHeader) and anything else like an MCP node would a tools/list.
func initializeReply(w http.ResponseWriter, r *http.Request, body []byte) {
	var msg struct {
		Method string `json:"method"`
	}
	w.Header().Set("Content-Type", "application/json")
	if json.Unmarshal(body, &msg) == nil && msg.Method == "initialize" {
		w.Header().Set("Mcp-Session-Id", r.Header.Get(sessionHeader))
		_, _ = io.WriteString(w, initResult)
		return
	}
	_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{}}`)
}

// initializeBody is an initialize request of exactly n bytes (padded with multi-byte UTF-8).
func initializeBody(t testing.TB, n int) []byte {
	t.Helper()
	prefix := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"},"pad":"`
	suffix := `"}}`
	fill := n - len(prefix) - len(suffix)
	if fill < 0 {
		t.Fatalf("an initialize body cannot be %d bytes", n)
	}
	pad := strings.Repeat("é-x", fill/4) // 4 bytes each
	pad += strings.Repeat("x", fill-len(pad))
	return []byte(prefix + pad + suffix)
}

// TestLearning: an initialize through one middleware is learned before its answer is released,
// and the client's next request, without a cookie, reaches the same node through another
// middleware on the same directory. With wrapSessionIds (the default) the client gets the wrapped
// id and the upstream keeps seeing its own; with wrapSessionIds=false only learned/ can pin it.
func TestLearning(t *testing.T) {
	host := plugin(t)
	twoNodes := &viewSpec{
		Nodes:    []nodeSpec{{ID: 1, Node: "a", State: "up"}, {ID: 2, Node: "b", State: "up"}},
		Sessions: []sessionSpec{},
		// Servers without the node library: no boot reported, listed with the unknown tag.
		// a is draining: the plugin places the new session on b, the one up node (and the balancer obeys).
		Boots: []bootSpec{{Node: "a", BootTag: "00000000", State: "draining"}, {Node: "b", BootTag: "00000000", State: "up"}},
	}
	for _, tc := range []struct {
		name string
		view *viewSpec
		wrap bool
	}{
		{"fresh view that does not know the session yet", twoNodes, true},
		{"no view (the sidecar never ran)", nil, true},
		{"fresh view, wrapSessionIds=false", twoNodes, false},
		{"no view, wrapSessionIds=false", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			id := "3f1c6a0e-learn-me"
			views := map[string]*viewSpec{}
			if tc.view != nil {
				views[dir] = tc.view
			}
			c, _, _ := writeViews(t, views, nil, nil)
			config := pluginConfig(nil)
			if !tc.wrap {
				config = pluginConfig(map[string]any{"wrapSessionIds": "false"})
			}
			// The balancer picks b for the initialize, and a for any later client it has to place
			// (round robin), so only pinning makes the next request reach b.
			up := newUpstream(t, []string{c.of(t, "a"), c.of(t, "b")}, c.of(t, "b"))
			up.reply = initializeReply

			first := host.newMiddleware(t, mount(dir), config, proxyTo(t, up))
			e1 := newEdge(t, first)
			released, learnedAtRelease := false, []string{}
			e1.onRelease = func() {
				released = true
				entries, _ := os.ReadDir(filepath.Join(dir, "learned"))
				for _, en := range entries {
					learnedAtRelease = append(learnedAtRelease, en.Name())
				}
			}
			body := initializeBody(t, 200)
			s, res := e1.do(t, c, request{body: body, header: http.Header{sessionHeader: {id}}})
			if res.status != 200 || string(res.body) != initResult {
				t.Fatalf("initialize answered %d %s, want the upstream's 200 %s", res.status, res.body, initResult)
			}
			setB := cookieName + "=" + c.of(t, "b") + cookieAttrs
			if v := res.header.Values("Set-Cookie"); !equalLines(v, []string{setB}) {
				t.Errorf("client got Set-Cookie %q, want the balancer's %q only", v, setB)
			}
			ids := res.header.Values("Mcp-Session-Id")
			if len(ids) != 1 || (ids[0] == id) == tc.wrap {
				t.Fatalf("client got Mcp-Session-Id %q for the server's %q (wrapSessionIds %v)", ids, id, tc.wrap)
			}
			clientID := ids[0]
			got := up.requests()
			if len(got) != 1 || !bytes.Equal(got[0].body, s.body) || got[0].length != int64(len(s.body)) {
				t.Fatalf("upstream did not get the exact initialize body with its Content-Length: %s", describe(got))
			}

			up.setPick(c.of(t, "a"))
			// The very next request, no cookie, through another middleware on the same directory.
			second := host.newMiddleware(t, mount(dir), config, proxyTo(t, up))
			e2 := newEdge(t, second)
			_, res = e2.do(t, c, request{sessionIDs: []string{clientID}})
			got = up.requests()
			pinned := cookieName + "=" + c.of(t, "b")
			if res.status != 200 || len(got) != 2 || !equalLines(got[1].header.Values("Cookie"), []string{pinned}) || got[1].backend != c.of(t, "b") {
				t.Fatalf("next request on another middleware: status %d, upstream got %s; want pinned with Cookie %q", res.status, describe(got[1:]), pinned)
			}
			if v := got[1].header.Values("Mcp-Session-Id"); !equalLines(v, []string{id}) {
				t.Errorf("upstream got Mcp-Session-Id %q, want its own %q", v, id)
			}
			if v := res.header.Values("Set-Cookie"); len(v) != 0 {
				t.Errorf("a pinned cookie-less request got Set-Cookie %q", v)
			}
			// A cookie naming another node is repaired towards the learned one.
			_, res = e2.do(t, c, request{sessionIDs: []string{clientID}, cookies: []string{"@a"}})
			got = up.requests()
			if len(got) != 3 || !equalLines(got[2].header.Values("Cookie"), []string{pinned}) || !equalLines(res.header.Values("Set-Cookie"), []string{setB}) {
				t.Errorf("misrouted request: upstream got %s, client Set-Cookie %q; want pinned to b and repaired", describe(got[2:]), res.header.Values("Set-Cookie"))
			}

			states, hashes := readDirs(t, []string{dir}, clientID)
			st, hash := states[dir], hashes[clientID]
			// learned/ names are the hash's first digits (bounded set, docs/registry-view.md).
			if !released || len(learnedAtRelease) != 1 || !strings.HasPrefix(hash, learnedAtRelease[0]) {
				t.Errorf("learned/ held %q when the response was released (released %v), want one name that prefixes %s", learnedAtRelease, released, hash)
			}
			if len(st.LearnedFiles) != 1 || st.LearnedFiles[hash] != c.of(t, "b") || len(st.InvalidLearned) != 0 {
				t.Errorf("learned/ = %v (invalid %v), want {%s: b}", st.LearnedFiles, st.InvalidLearned, hash)
			}
			if len(st.Learned) != 1 || st.Learned[0] != (learnedEvent{ID: clientID, Hash: hash, Cookie: c.of(t, "b")}) {
				t.Errorf("l events %+v, want one for the session naming b", st.Learned)
			}
			checkLogs(t, first, []string{id, clientID})
			checkLogs(t, second, []string{id, clientID})
		})
	}
}

// TestRequestBodies: whatever the plugin reads (an initialize candidate) or leaves alone, the
// upstream gets the client's bytes and length; bodies up to maxInitializeBodyBytes with a known
// length are inspected (an initialize among them is learned), others are not.
func TestRequestBodies(t *testing.T) {
	host := plugin(t)
	dir := t.TempDir()
	type bodyCase struct {
		name       string
		req        request
		initialize bool
		learned    bool
	}
	binary := make([]byte, 3000)
	for i := range binary {
		binary[i] = byte(i)
	}
	cases := []bodyCase{}
	for _, n := range []int{200, 1023, 1024, 1025, 4096, 65535, 65536, 65537, 200000} {
		cases = append(cases, bodyCase{name: fmt.Sprintf("initialize of %d bytes", n), req: request{body: initializeBody(t, n)}, initialize: true, learned: n <= 65536})
	}
	cases = append(cases,
		bodyCase{name: "initialize sent chunked", req: request{body: initializeBody(t, 300), chunked: true}, initialize: true},
		bodyCase{name: "sessionless tools/list", req: request{}},
		bodyCase{name: "sessionless POST of raw bytes", req: request{body: binary}},
		bodyCase{name: "sessionless POST of 70000 bytes", req: request{body: bytes.Repeat([]byte("ü"), 35000)}},
		bodyCase{name: "pinned tools/list", req: request{sessionIDs: []string{"s-up"}}},
		bodyCase{name: "pinned POST of raw bytes", req: request{sessionIDs: []string{"s-up"}, body: binary}},
		bodyCase{name: "pinned POST of 70000 bytes, chunked", req: request{sessionIDs: []string{"s-up"}, body: bytes.Repeat([]byte("ü"), 35000), chunked: true}},
		bodyCase{name: "unknown session, empty body", req: request{sessionIDs: []string{"never-seen"}, body: []byte{}}},
	)
	ids := []string{}
	for i := range cases {
		if cases[i].initialize {
			id := fmt.Sprintf("body-session-%02d", i)
			cases[i].req.header = http.Header{sessionHeader: {id}}
			ids = append(ids, id)
		}
	}
	c, _, _ := writeViews(t, map[string]*viewSpec{dir: cluster}, nil, nil)
	// a is the cluster's one up node: the plugin places every new session there (the balancer obeys).
	up := newUpstream(t, []string{c.of(t, "a"), c.of(t, "b")}, c.of(t, "a"))
	up.reply = initializeReply
	mw := host.newMiddleware(t, mount(dir), pluginConfig(nil), proxyTo(t, up))
	e := newEdge(t, mw)
	learnedIDs := []string{}
	for _, bc := range cases {
		t.Run(bc.name, func(t *testing.T) {
			before := len(up.requests())
			s, res := e.do(t, c, bc.req)
			got := up.requests()[before:]
			if res.status != 200 || len(got) != 1 {
				t.Fatalf("status %d (%s), upstream got %d requests", res.status, res.body, len(got))
			}
			if !bytes.Equal(got[0].body, s.body) {
				t.Errorf("upstream body (%d bytes) differs from the client's (%d bytes)", len(got[0].body), len(s.body))
			}
			wantLength := int64(len(s.body))
			if bc.req.chunked {
				wantLength = -1
			}
			if got[0].length != wantLength || got[0].chunked != bc.req.chunked {
				t.Errorf("upstream Content-Length %d chunked %v, client sent %d chunked %v", got[0].length, got[0].chunked, wantLength, bc.req.chunked)
			}
			if bc.learned {
				learnedIDs = append(learnedIDs, res.header.Get("Mcp-Session-Id"))
			}
		})
	}
	states, hashes := readDirs(t, []string{dir}, learnedIDs...)
	st := states[dir]
	wantLearned := []string{}
	for _, id := range learnedIDs {
		wantLearned = append(wantLearned, hashes[id])
	}
	gotLearned := []string{}
	for h, cookie := range st.LearnedFiles {
		gotLearned = append(gotLearned, h)
		if cookie != c.of(t, "a") {
			t.Errorf("learned/%s names %s, want a", h, cookie)
		}
	}
	sort.Strings(gotLearned)
	sort.Strings(wantLearned)
	if !equalLines(gotLearned, wantLearned) {
		t.Errorf("learned/ holds %v, want the initializes of at most maxInitializeBodyBytes with a length: %v", gotLearned, wantLearned)
	}
	checkLogs(t, mw, append(ids, "s-up", "never-seen"))
}
