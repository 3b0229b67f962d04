package conformance

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestMetaVersions: on the real host an instance reads the meta again only when its file changed
// (a stat of its inode, size and times per refresh): every new meta the sidecar renames into
// place is seen within a refresh, whatever changed in it, and an unchanged one keeps routing.
func TestMetaVersions(t *testing.T) {
	host := plugin(t)
	dir := t.TempDir()
	spec := func(state string) map[string]*viewSpec {
		return map[string]*viewSpec{dir: {
			Nodes: []nodeSpec{{ID: 1, Node: "a", State: "up"}},
			Boots: []bootSpec{{Node: "a", BootTag: "0badcafe", State: state}},
		}}
	}
	_, _, tokens := writeViews(t, spec("up"), nil, map[string]tokenSpec{"minted": {Kind: "minted", Node: "a", BootTag: "0badcafe"}})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mw := host.newMiddleware(t, mount(dir), pluginConfig(nil), next)
	status := func() (int, string) {
		r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
		r.Header.Set("Mcp-Session-Id", tokens["minted"])
		rec := httptest.NewRecorder()
		mw.handler.ServeHTTP(rec, r)
		return rec.Code, rec.Header().Get("Mcp-Affinity")
	}
	// "up", "down" and "gone" differ in length; "down" to "gone" does not, nor does "gone" to "down".
	for _, step := range []struct {
		state  string
		status int
		reason string
	}{{"up", 200, ""}, {"down", 503, "unavailable"}, {"gone", 404, "lost"}, {"down", 503, "unavailable"}, {"up", 200, ""}} {
		t.Run(fmt.Sprintf("then %s", step.state), func(t *testing.T) {
			writeViews(t, spec(step.state), nil, nil)
			time.Sleep(150 * time.Millisecond) // past viewRefreshMs (100)
			for i := 0; i < 3; i++ {
				if code, reason := status(); code != step.status || reason != step.reason {
					t.Fatalf("request %d: %d %q, want %d %q", i, code, reason, step.status, step.reason)
				}
				time.Sleep(120 * time.Millisecond)
			}
		})
	}
}
