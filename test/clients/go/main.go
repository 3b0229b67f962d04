// The Go SDK client of the end-to-end suite: runs sessions through the official
// github.com/modelcontextprotocol/go-sdk Streamable HTTP client and prints one JSON line per
// operation (initialize, whoami, counter calls): "at" is the wall clock (ms since the Unix epoch)
// when the operation started, "ms" its duration. With --reinit, a session the server reports
// missing (the SDK's ErrSessionMissing: a 404) is replaced by a new one, as an application would.
// Session ids are secrets: only a SHA-256 tag is printed.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var (
	start = time.Now()
	outMu sync.Mutex
	enc   = json.NewEncoder(os.Stdout)
)

func since() float64 { return float64(time.Since(start).Microseconds()) / 1000 }

// Wall clock of a time from since(), for lining events up with other processes.
func at(t float64) float64 { return float64(start.UnixMicro())/1000 + t }

func emit(ev map[string]any) {
	if t, ok := ev["t"].(float64); ok {
		ev["at"] = at(t)
	}
	outMu.Lock()
	defer outMu.Unlock()
	_ = enc.Encode(ev)
}

func tag(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])[:12]
}

func text(res *mcp.CallToolResult) string {
	if res == nil || len(res.Content) == 0 {
		return ""
	}
	if t, ok := res.Content[0].(*mcp.TextContent); ok {
		return t.Text
	}
	return ""
}

func errText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout: " + err.Error()
	}
	return err.Error()
}

type session struct {
	cs   *mcp.ClientSession
	node string
}

// protocolVersion is the revision the client asks for (--protocol-version); empty: the SDK's latest,
// with which it first probes server/discover and speaks 2026-07-28 to a server that answers it.
var protocolVersion string

var initSeq atomic.Int64

// firstCall labels the first request it carries, a session's initialize, with an X-E2e-Call id,
// which Traefik's access log keeps: a failed initialize is then named by its row.
type firstCall struct {
	base http.RoundTripper
	call string
	once sync.Once
}

func (f *firstCall) RoundTrip(r *http.Request) (*http.Response, error) {
	first := false
	f.once.Do(func() { first = true })
	if first {
		r = r.Clone(r.Context())
		r.Header.Set("X-E2e-Call", f.call)
	}
	return f.base.RoundTrip(r)
}

// open initializes a session and asks which node serves it (whoami); events are printed.
func open(ctx context.Context, hc *http.Client, url string, s int, timeout time.Duration) *session {
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-affinity-e2e-go", Version: "0.1.0"}, nil)
	t0 := since()
	call := fmt.Sprintf("go-init-%d-%d", s, initSeq.Add(1))
	ihc := &http.Client{Transport: &firstCall{base: hc.Transport, call: call}}
	ictx, cancel := context.WithTimeout(ctx, timeout)
	cs, err := client.Connect(ictx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: ihc}, &mcp.ClientSessionOptions{ProtocolVersion: protocolVersion})
	cancel()
	if err != nil {
		emit(map[string]any{"ev": "init", "s": s, "t": t0, "ms": since() - t0, "call": call, "error": errText(err)})
		return nil
	}
	emit(map[string]any{"ev": "init", "s": s, "t": t0, "ms": since() - t0, "call": call, "session": tag(cs.ID())})
	t0 = since()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	who, err := cs.CallTool(wctx, &mcp.CallToolParams{Name: "whoami"})
	cancel()
	if err != nil {
		emit(map[string]any{"ev": "whoami", "s": s, "t": t0, "ms": since() - t0, "error": errText(err)})
		cs.Close()
		return nil
	}
	var info struct {
		Node string `json:"node"`
		Boot string `json:"boot"`
	}
	_ = json.Unmarshal([]byte(text(who)), &info)
	emit(map[string]any{"ev": "whoami", "s": s, "t": t0, "ms": since() - t0, "node": info.Node, "boot": info.Boot, "session": tag(cs.ID())})
	return &session{cs: cs, node: info.Node}
}

func runSession(ctx context.Context, hc *http.Client, url string, s, calls int, pause, timeout time.Duration, reinit bool) {
	cur := open(ctx, hc, url, s, timeout)
	if cur == nil {
		return
	}
	defer func() { cur.cs.Close() }()
	for n := 1; n <= calls; n++ {
		if n > 1 && pause > 0 {
			time.Sleep(pause)
		}
		t0 := since()
		cctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := cur.cs.CallTool(cctx, &mcp.CallToolParams{Name: "counter"})
		cancel()
		ev := map[string]any{"ev": "call", "s": s, "n": n, "t": t0, "ms": since() - t0, "session": tag(cur.cs.ID()), "node": cur.node}
		switch {
		case err != nil:
			ev["error"] = errText(err)
			ev["missing"] = errors.Is(err, mcp.ErrSessionMissing)
		case res.IsError:
			ev["error"] = "tool error: " + text(res)
		default:
			if v, perr := strconv.Atoi(text(res)); perr == nil {
				ev["value"] = v
			} else {
				ev["error"] = "unexpected result: " + text(res)
			}
		}
		emit(ev)
		if err != nil && reinit && errors.Is(err, mcp.ErrSessionMissing) {
			cur.cs.Close()
			next := open(ctx, hc, url, s, timeout)
			if next == nil {
				return
			}
			cur = next
		}
	}
}

func main() {
	url := flag.String("url", "", "MCP endpoint")
	cafile := flag.String("cafile", "", "trust this PEM certificate")
	sessions := flag.Int("sessions", 1, "sessions run at once")
	calls := flag.Int("calls", 10, "counter calls per session")
	pauseMs := flag.Int("pause-ms", 0, "pause between calls")
	timeoutMs := flag.Int("timeout-ms", 8000, "bound of each operation (a hang shows as a timeout)")
	reinit := flag.Bool("reinit", false, "replace a session the server reports missing (404) by a new one")
	flag.StringVar(&protocolVersion, "protocol-version", "", "protocol revision to ask for (default: the SDK's latest)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "--url is required")
		os.Exit(2)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *cafile != "" {
		pem, err := os.ReadFile(*cafile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	// No cookie jar: like most MCP clients, this one keeps no cookies.
	hc := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	for s := 0; s < *sessions; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			runSession(context.Background(), hc, *url, s, *calls, time.Duration(*pauseMs)*time.Millisecond, time.Duration(*timeoutMs)*time.Millisecond, *reinit)
		}(s)
	}
	wg.Wait()
	emit(map[string]any{"ev": "done", "t": since()})
}
