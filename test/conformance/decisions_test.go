package conformance

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The request-phase decision table of docs/plugin.md. A row names its view, its plugin settings,
// one client request and what must come of it. To add a row, append to decisionRows (and a view
// to the views below if no existing one fits); a new outcome kind is a new field of `want` with
// its check in checkRow.

// The test cluster's view (CLUSTER_VIEW of test/support/plugin-fixture.ts): node a up, b draining,
// c down, d down with a Retry-After hint of 42 s, gone gone; sessions s-up (a), s-drain (b),
// s-down (c), s-down-hint (d), s-gone (gone), s-closed (a, closed). Each node has one incarnation
// (`boot` line) in its node's state, tagged 0000000<node>.
var clusterView = viewSpec{Base: "cluster", Boots: []bootSpec{
	{Node: "a", BootTag: "0000000a", State: "up"},
	{Node: "b", BootTag: "0000000b", State: "draining"},
	{Node: "c", BootTag: "0000000c", State: "down"},
	{Node: "d", BootTag: "0000000d", State: "down", RetryAfterSeconds: 42},
	{Node: "gone", BootTag: "0000000e", State: "gone"},
}}

// Session ids with routing tokens; a request names one as `$name`.
var tokens = map[string]tokenSpec{
	"minted-a":        {Kind: "minted", Node: "a", BootTag: "0000000a"},
	"minted-a-reboot": {Kind: "minted", Node: "a", BootTag: "12345678"},
	"minted-c":        {Kind: "minted", Node: "c", BootTag: "0000000c"},
	"minted-gone":     {Kind: "minted", Node: "gone", BootTag: "0000000e"},
	"minted-unlisted": {Kind: "minted", Node: "unlisted", BootTag: "0000000f"},
	"wrapped-a":       {Kind: "wrapped", Node: "a", BootTag: "0000000a", Inner: "server-own-id-1"},
	// Task handles (MCP 2026-07-28): a request names one as `$name` in a header or its body.
	"task-a":    {Kind: "task", Node: "a", BootTag: "0000000a", Inner: "task-1"},
	"task-c":    {Kind: "task", Node: "c", BootTag: "0000000c", Inner: "task-3"},
	"task-gone": {Kind: "task", Node: "gone", BootTag: "0000000e", Inner: "task-2"},
}

// taskRequest is a tasks/get as a 2026-07-28 client sends it: Mcp-Name and params.taskId name the
// handle `$name` (bodyHandle: the body's, when it differs), MCP-Protocol-Version `version`.
func taskRequest(handle, bodyHandle, version string) request {
	h := http.Header{}
	h.Set("Mcp-Method", "tasks/get")
	h.Set("Mcp-Name", handle)
	if version != "" {
		h.Set("MCP-Protocol-Version", version)
	}
	body := `{"jsonrpc":"2.0","id":41,"method":"tasks/get","params":{"taskId":"` + bodyHandle + `"}}`
	return request{header: h, body: []byte(body)}
}

func withView(v viewSpec, edit func(*viewSpec)) *viewSpec {
	edit(&v)
	return &v
}

var (
	cluster = &clusterView
	// The sidecar stopped publishing two hours ago (beyond the rows' staleAfterMs).
	staleCluster = withView(clusterView, func(v *viewSpec) { v.PublishedAgoMs = 2 * 3600 * 1000 })
	// Every shard carries another epoch than the meta (a sidecar restart caught mid-publish).
	otherEpochCluster = withView(clusterView, func(v *viewSpec) { v.Epoch = 777; v.ShardEpoch = 778 })
)

// The exact bodies docs/plugin.md gives.
const bodyLost = `{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}`

type want struct {
	reason string // the `d` reason counted for the request

	// Forwarded requests.
	untouched    bool   // the upstream got the Cookie lines exactly as sent
	pinTo        string // node: the upstream got one Cookie line, `_mcp_backend=<owner>[; others]`
	otherCookies string // the rest of the pinned line
	repair       bool   // the client got the repair Set-Cookie naming pinTo
	upstreamID   string // the Mcp-Session-Id the upstream gets ("" = the one sent)
	// A task request: the Mcp-Name and params.taskId the upstream gets, in a body as long as the client's.
	upstreamTask string

	// Answers of the plugin itself.
	status     int
	code       int    // JSON-RPC error code
	message    string // exact error message ("" = any non-empty)
	body       string // exact body ("" = not compared)
	retryAfter string
}

type row struct {
	name   string
	view   *viewSpec                      // nil: an empty shared directory
	damage func(t *testing.T, dir string) // applied after the view is written
	config map[string]any
	req    request
	want   want
}

func garbageMeta(t *testing.T, dir string) {
	if err := os.WriteFile(filepath.Join(dir, "view", "meta"), []byte("not a view\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

var decisionRows = []row{
	// no Mcp-Session-Id
	// A POST without a session id is no session's: it goes to an up node (a is the only one), as a new session does.
	{name: "no session id: POST goes to the up node", view: cluster, req: request{}, want: want{reason: "sessionless", pinTo: "a"}},
	{name: "no session id: GET passes", view: cluster, req: request{method: "GET"}, want: want{reason: "sessionless", untouched: true}},
	{name: "empty session id goes to the up node", view: cluster, req: request{sessionIDs: []string{""}}, want: want{reason: "sessionless", pinTo: "a"}},
	{name: "no session id, a down node's cookie: the up node", view: cluster, req: request{cookies: []string{"@c"}}, want: want{reason: "sessionless", pinTo: "a"}},
	{name: "no session id, the up node's cookie: untouched", view: cluster, req: request{cookies: []string{"@a"}}, want: want{reason: "sessionless", untouched: true}},

	// invalid ids
	{name: "id with a space: 400", view: cluster, req: request{sessionIDs: []string{"bad id"}}, want: invalid},
	{name: "id with a tab: 400", view: cluster, req: request{sessionIDs: []string{"bad\tid"}}, want: invalid},
	{name: "non-ASCII id: 400", view: cluster, req: request{sessionIDs: []string{"sessión"}}, want: invalid},
	{name: "id longer than maxSessionIdLength: 400", view: cluster, req: request{sessionIDs: []string{strings.Repeat("x", 257)}}, want: invalid},
	{name: "Mcp-Session-Id given twice: 400", view: cluster, req: request{sessionIDs: []string{"s-up", "s-up"}}, want: invalid},
	{name: "id of exactly maxSessionIdLength is valid", view: cluster, req: request{sessionIDs: []string{strings.Repeat("y", 256)}}, want: want{reason: "unknown", untouched: true}},

	// owner up or draining
	{name: "owner up, no cookie: pin", view: cluster, req: request{sessionIDs: []string{"s-up"}}, want: want{reason: "pin", pinTo: "a"}},
	{name: "owner draining, no cookie: pin", view: cluster, req: request{sessionIDs: []string{"s-drain"}}, want: want{reason: "pin", pinTo: "b"}},
	{name: "owner up, cookie names owner: pass", view: cluster, req: request{sessionIDs: []string{"s-up"}, cookies: []string{"theme=dark; @a"}}, want: want{reason: "pass", untouched: true}},
	{name: "owner draining, cookie names another node: repair", view: cluster, req: request{sessionIDs: []string{"s-drain"}, cookies: []string{"@a"}}, want: want{reason: "repair", pinTo: "b", repair: true}},
	{name: "owner up, cookie names another node: repair", view: cluster, req: request{sessionIDs: []string{"s-up"}, cookies: []string{"@b"}}, want: want{reason: "repair", pinTo: "a", repair: true}},
	{
		name: "pinning keeps every other cookie of every line in order", view: cluster,
		req:  request{sessionIDs: []string{"s-up"}, cookies: []string{"theme=dark; @b; lang=en", "sid=xyz; @c", "last=1"}},
		want: want{reason: "repair", pinTo: "a", otherCookies: "theme=dark; lang=en; sid=xyz; last=1", repair: true},
	},
	{
		name: "onMisroute=reject, cookie names another node: 404", view: cluster, config: map[string]any{"onMisroute": "reject"},
		req:  request{sessionIDs: []string{"s-up"}, cookies: []string{"@b"}},
		want: want{reason: "reject", status: 404, code: -32001, message: "Session not found on this route"},
	},
	{
		name: "onMisroute=reject, no cookie: still pin", view: cluster, config: map[string]any{"onMisroute": "reject"},
		req: request{sessionIDs: []string{"s-up"}}, want: want{reason: "pin", pinTo: "a"},
	},

	// owner down
	{
		name: "owner down: 503 with the configured Retry-After", view: cluster, req: request{sessionIDs: []string{"s-down"}},
		want: want{reason: "unavailable", status: 503, code: -32000, retryAfter: "5"},
	},
	{
		name: "owner down: 503 with the view's Retry-After hint", view: cluster, req: request{sessionIDs: []string{"s-down-hint"}, cookies: []string{"@d"}},
		want: want{reason: "unavailable", status: 503, code: -32000, retryAfter: "42"},
	},
	{
		name: "owner down, onOwnerDown=pass: pin", view: cluster, config: map[string]any{"onOwnerDown": "pass"},
		req: request{sessionIDs: []string{"s-down"}}, want: want{reason: "pin", pinTo: "c"},
	},

	// owner gone, session closed
	{name: "owner gone: 404", view: cluster, req: request{sessionIDs: []string{"s-gone"}}, want: lost},
	{name: "owner gone, cookie names it: 404", view: cluster, req: request{sessionIDs: []string{"s-gone"}, cookies: []string{"@gone"}}, want: lost},
	{name: "session closed, cookie names its node: 404", view: cluster, req: request{sessionIDs: []string{"s-closed"}, cookies: []string{"@a"}}, want: lost},
	{name: "DELETE of a lost session: 404", view: cluster, req: request{method: "DELETE", sessionIDs: []string{"s-gone"}}, want: lost},

	// unknown
	{name: "unknown session: pass", view: cluster, req: request{sessionIDs: []string{"never-seen"}}, want: want{reason: "unknown", untouched: true}},
	{name: "unknown session with a cookie: pass", view: cluster, req: request{sessionIDs: []string{"never-seen"}, cookies: []string{"@b"}}, want: want{reason: "unknown", untouched: true}},

	// routing tokens (the view holds no record of these sessions)
	{name: "minted token, live incarnation, no cookie: pin", view: cluster, req: request{sessionIDs: []string{"$minted-a"}}, want: want{reason: "pin", pinTo: "a"}},
	{name: "minted token, live incarnation, cookie names its node: pass", view: cluster, req: request{sessionIDs: []string{"$minted-a"}, cookies: []string{"@a"}}, want: want{reason: "pass", untouched: true}},
	{name: "minted token, live incarnation, cookie names another node: repair", view: cluster, req: request{sessionIDs: []string{"$minted-a"}, cookies: []string{"@b"}}, want: want{reason: "repair", pinTo: "a", repair: true}},
	{name: "minted token, boot the view does not list: pin", view: cluster, req: request{sessionIDs: []string{"$minted-a-reboot"}}, want: want{reason: "pin", pinTo: "a"}},
	{
		name: "minted token, down incarnation: 503", view: cluster, req: request{sessionIDs: []string{"$minted-c"}},
		want: want{reason: "unavailable", status: 503, code: -32000, retryAfter: "5"},
	},
	{name: "minted token, gone incarnation: 404", view: cluster, req: request{sessionIDs: []string{"$minted-gone"}}, want: lost},
	{name: "minted token, node the view does not list (yet): pin to it", view: cluster, req: request{sessionIDs: []string{"$minted-unlisted"}}, want: want{reason: "unknown", pinTo: "unlisted"}},
	{name: "minted token, node the view does not list, cookie names another node: pin, no repair", view: cluster, req: request{sessionIDs: []string{"$minted-unlisted"}, cookies: []string{"@a"}}, want: want{reason: "unknown", pinTo: "unlisted"}},
	{name: "minted token, no view: pin to its node", view: nil, req: request{sessionIDs: []string{"$minted-a"}}, want: want{reason: "fail-open", pinTo: "a"}},
	{name: "minted token, stale view: pin to its node (no 404)", view: staleCluster, req: request{sessionIDs: []string{"$minted-gone"}}, want: want{reason: "fail-open", pinTo: "gone"}},
	{
		name: "wrapped id, live incarnation: pin, the upstream gets the server's own id", view: cluster, req: request{sessionIDs: []string{"$wrapped-a"}},
		want: want{reason: "pin", pinTo: "a", upstreamID: "server-own-id-1"},
	},

	// view trouble fails open
	{name: "no view: pass", view: nil, req: request{sessionIDs: []string{"s-up"}, cookies: []string{"@b"}}, want: want{reason: "fail-open", untouched: true}},
	{name: "no view, gone session: pass", view: nil, req: request{sessionIDs: []string{"s-gone"}}, want: want{reason: "fail-open", untouched: true}},
	{name: "garbage meta: pass", view: cluster, damage: garbageMeta, req: request{sessionIDs: []string{"s-gone"}}, want: want{reason: "fail-open", untouched: true}},
	{name: "shards of another epoch: pass", view: otherEpochCluster, req: request{sessionIDs: []string{"s-gone"}}, want: want{reason: "fail-open", untouched: true}},
	// A stale view still pins to the owner it names; Traefik's balancer then decides for a gone one.
	{name: "stale view, owner gone: pin (no 404)", view: staleCluster, req: request{sessionIDs: []string{"s-gone"}}, want: want{reason: "fail-open", pinTo: "gone"}},
	{name: "stale view, owner down: pin (no 503)", view: staleCluster, req: request{sessionIDs: []string{"s-down"}}, want: want{reason: "fail-open", pinTo: "c"}},
	{
		name: "stale view, owner up: pin keeping other cookies", view: staleCluster, req: request{sessionIDs: []string{"s-up"}, cookies: []string{"k=v"}},
		want: want{reason: "fail-open", pinTo: "a", otherCookies: "k=v"},
	},
	// task handles (MCP 2026-07-28): a tasks/get routed by its Mcp-Name
	{name: "task of a live node: pinned, the node reads its own task id", view: cluster, req: taskRequest("$task-a", "$task-a", "2026-07-28"), want: want{reason: "handle", pinTo: "a", upstreamTask: "task-1"}},
	{name: "task of a gone node: its server's not found (200, -32602)", view: cluster, req: taskRequest("$task-gone", "$task-gone", "2026-07-28"), want: want{reason: "handle-lost", status: 200, code: -32602}},
	{name: "task of a down node: 503", view: cluster, req: taskRequest("$task-c", "$task-c", "2026-07-28"), want: want{reason: "handle-unavailable", status: 503, code: -32000, retryAfter: "5"}},
	{name: "task whose body names the raw id: 400 -32020", view: cluster, req: taskRequest("$task-a", "task-1", "2026-07-28"), want: want{reason: "handle-mismatch", status: 400, code: -32020}},
	{name: "task from a 2025 client: 400 -32020", view: cluster, req: taskRequest("$task-a", "$task-a", "2025-11-25"), want: want{reason: "handle-mismatch", status: 400, code: -32020}},
	{name: "task, stale view: pinned by its token", view: staleCluster, req: taskRequest("$task-gone", "$task-gone", "2026-07-28"), want: want{reason: "fail-open", pinTo: "gone", upstreamTask: "task-2"}},
}

var (
	invalid = want{reason: "invalid", status: 400, code: -32600}
	lost    = want{reason: "lost", status: 404, code: -32001, message: "Session not found", body: bodyLost}
)

// The balancer's servers: every cluster node but the gone one; a client without a valid cookie
// gets node a.
var balancerServers = []string{"a", "b", "c", "d"}

func isServer(name string) bool {
	for _, n := range balancerServers {
		if n == name {
			return true
		}
	}
	return false
}

func TestDecisionTable(t *testing.T) {
	host := plugin(t)
	root := t.TempDir()
	dirs := make([]string, len(decisionRows))
	views := map[string]*viewSpec{}
	for i, r := range decisionRows {
		dirs[i] = filepath.Join(root, strings.NewReplacer(" ", "-", ":", "", ",", "", "=", "-", "(", "", ")", "").Replace(r.name))
		if err := os.Mkdir(dirs[i], 0o755); err != nil {
			t.Fatal(err)
		}
		if r.view != nil {
			views[dirs[i]] = r.view
		}
	}
	c, _, made := writeViews(t, views, nil, tokens)
	servers := []string{}
	for _, n := range balancerServers {
		servers = append(servers, c.of(t, n))
	}

	for i, r := range decisionRows {
		t.Run(r.name, func(t *testing.T) {
			r.req.sessionIDs = resolveTokens(t, r.req.sessionIDs, made)
			resolveHandles(t, &r.req, made)
			if r.damage != nil {
				r.damage(t, dirs[i])
			}
			up := newUpstream(t, servers, c.of(t, "a"))
			mw := host.newMiddleware(t, mount(dirs[i]), pluginConfig(r.config), proxyTo(t, up))
			e := newEdge(t, mw)
			s, res := e.do(t, c, r.req)
			got := up.requests()
			// A later sessionless request past eventFlushMs flushes this instance's counts.
			time.Sleep(150 * time.Millisecond)
			e.do(t, c, request{method: "GET"})
			if n := mw.instances.Load(); n != 1 {
				t.Fatalf("the middleware made %d guest instances; the row's counts may sit in another", n)
			}
			checkRow(t, c, r, s, res, got)
			checkLogs(t, mw, r.req.sessionIDs)
		})
	}

	states, _ := readDirs(t, dirs)
	for i, r := range decisionRows {
		t.Run(r.name+"/counted", func(t *testing.T) {
			counts := map[string]int{}
			for k, v := range states[dirs[i]].Decisions {
				counts[k] = v
			}
			counts["sessionless"]-- // the follow-up request
			for k, v := range counts {
				if v == 0 {
					delete(counts, k)
				}
			}
			if len(counts) != 1 || counts[r.want.reason] != 1 {
				t.Errorf("d counts (follow-up removed) = %v, want exactly {%s: 1}", counts, r.want.reason)
			}
		})
	}
}

// resolveTokens replaces `$name` with the session id made for token name.
func resolveTokens(t *testing.T, ids []string, made map[string]string) []string {
	var out []string
	for _, id := range ids {
		if name, ok := strings.CutPrefix(id, "$"); ok {
			v, found := made[name]
			if !found {
				t.Fatalf("no token %q", name)
			}
			id = v
		}
		out = append(out, id)
	}
	return out
}

// resolveHandles replaces `$name` in the request's header values and body with the handle made for name.
func resolveHandles(t *testing.T, req *request, made map[string]string) {
	for k, vs := range req.header {
		req.header[k] = resolveTokens(t, vs, made)
	}
	for name, v := range made {
		req.body = bytes.ReplaceAll(req.body, []byte(`"$`+name+`"`), []byte(`"`+v+`"`))
	}
}

func checkRow(t *testing.T, c cookies, r row, s sent, res response, got []received) {
	t.Helper()
	w := r.want
	if w.status != 0 {
		if len(got) != 0 {
			t.Errorf("the plugin answered %d yet the upstream got the request", w.status)
		}
		checkAnswer(t, w, res, answerID(w, s))
		return
	}
	if len(got) != 1 {
		t.Fatalf("the upstream got %s, want 1 request (client saw %d %s)", describe(got), res.status, res.body)
	}
	g := got[0]
	if res.status != http.StatusOK {
		t.Errorf("status %d, want the upstream's 200 (body %s)", res.status, res.body)
	}
	if v := res.header.Values("Mcp-Affinity"); len(v) != 0 {
		t.Errorf("a forwarded request's response carries Mcp-Affinity %v", v)
	}
	if v := g.header.Values("Mcp-Affinity"); len(v) != 0 {
		t.Errorf("the upstream got Mcp-Affinity %v", v)
	}
	if w.upstreamTask != "" {
		checkTaskRequest(t, w.upstreamTask, s, g)
	} else if g.method != s.method || string(g.body) != string(s.body) {
		t.Errorf("upstream got %s %q, client sent %s %q", g.method, g.body, s.method, s.body)
	}
	wantIDs := r.req.sessionIDs
	if w.upstreamID != "" {
		wantIDs = []string{w.upstreamID}
	}
	if ids := g.header.Values("Mcp-Session-Id"); !equalLines(ids, wantIDs) && !(len(ids) == 0 && wantIDs == nil) {
		t.Errorf("upstream got Mcp-Session-Id %q, want %q", ids, wantIDs)
	}
	lines := g.header.Values("Cookie")
	switch {
	case w.untouched:
		if !equalLines(lines, s.cookies) {
			t.Errorf("upstream got Cookie lines %q, want them untouched %q", lines, s.cookies)
		}
	case w.pinTo != "":
		line := cookieName + "=" + c.of(t, w.pinTo)
		if w.otherCookies != "" {
			line += "; " + w.otherCookies
		}
		if !equalLines(lines, []string{line}) {
			t.Errorf("upstream got Cookie lines %q, want [%q]", lines, line)
		}
		if isServer(w.pinTo) && g.backend != c.of(t, w.pinTo) {
			t.Errorf("the balancer chose %s, want the owner %s", g.backend, w.pinTo)
		}
	default:
		t.Fatalf("row wants neither untouched nor pinned")
	}
	// Set-Cookie: the balancer's own when it chose a server, plus the repair.
	wantSet := []string{}
	if g.set != "" {
		wantSet = append(wantSet, g.set)
	}
	if w.repair {
		wantSet = append(wantSet, cookieName+"="+c.of(t, w.pinTo)+cookieAttrs)
	}
	gotSet := append([]string(nil), res.header.Values("Set-Cookie")...)
	sort.Strings(gotSet)
	sort.Strings(wantSet)
	if !equalLines(gotSet, wantSet) {
		t.Errorf("client got Set-Cookie %q, want %q", gotSet, wantSet)
	}
}

// checkTaskRequest: the node reads its own task id in Mcp-Name and params.taskId, in a body of the
// length the client declared (whitespace takes the handle's head), otherwise the client's JSON.
func checkTaskRequest(t *testing.T, task string, s sent, g received) {
	t.Helper()
	if v := g.header.Values("Mcp-Name"); !equalLines(v, []string{task}) {
		t.Errorf("upstream got Mcp-Name %q, want %q", v, task)
	}
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			TaskID string `json:"taskId"`
		} `json:"params"`
	}
	if err := json.Unmarshal(g.body, &m); err != nil || m.Params.TaskID != task || m.Method != "tasks/get" || string(m.ID) != "41" {
		t.Errorf("upstream got body %q, want the client's with taskId %q", g.body, task)
	}
	if len(g.body) != len(s.body) {
		t.Errorf("upstream got a body of %d bytes, the client sent %d", len(g.body), len(s.body))
	}
}

// answerID is the JSON-RPC id an edge answer must carry: the request's own id in a 503 to a single
// POSTed request (so the client can match it), null in every other answer.
func answerID(w want, s sent) string {
	// A 503, and an answer to a handle's request (the 2026 dialect), carry the request's id.
	if (w.status != 503 && !strings.HasPrefix(w.reason, "handle")) || s.method != http.MethodPost {
		return "null"
	}
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(s.body, &m) != nil || m.Method == "" || len(m.ID) == 0 {
		return "null"
	}
	return string(m.ID)
}

func checkAnswer(t *testing.T, w want, res response, wantID string) {
	t.Helper()
	if res.status != w.status {
		t.Fatalf("status %d, want %d (body %s)", res.status, w.status, res.body)
	}
	if v := res.header.Values("Content-Type"); !equalLines(v, []string{"application/json"}) {
		t.Errorf("Content-Type %q, want application/json", v)
	}
	if v := res.header.Values("Mcp-Affinity"); !equalLines(v, []string{w.reason}) {
		t.Errorf("Mcp-Affinity %q, want %q", v, w.reason)
	}
	if v := res.header.Values("Retry-After"); (w.retryAfter == "" && len(v) != 0) || (w.retryAfter != "" && !equalLines(v, []string{w.retryAfter})) {
		t.Errorf("Retry-After %q, want %q", v, w.retryAfter)
	}
	if v := res.header.Values("Set-Cookie"); len(v) != 0 {
		t.Errorf("an answer of the plugin sets cookies %q", v)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(res.body, &body); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, res.body)
	}
	var rpc struct {
		JSONRPC string `json:"jsonrpc"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(res.body, &rpc)
	if len(body) != 3 || body["id"] == nil || string(body["id"]) != wantID || rpc.JSONRPC != "2.0" || rpc.Error.Code != w.code || rpc.Error.Message == "" {
		t.Errorf("body %s, want a JSON-RPC 2.0 error %d with id %s and nothing else", res.body, w.code, wantID)
	}
	if w.message != "" && rpc.Error.Message != w.message {
		t.Errorf("error message %q, want %q", rpc.Error.Message, w.message)
	}
	if w.body != "" && string(res.body) != w.body {
		t.Errorf("body %s, want exactly %s", res.body, w.body)
	}
}
