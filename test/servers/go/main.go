// A stateful Streamable HTTP MCP server on the official Go SDK
// (github.com/modelcontextprotocol/go-sdk), without the node library.
//
// It stands for "any MCP server" behind the edge, as test/servers/python_mcp_server.py does for
// the Python SDK: sessions are minted by the SDK (server-assigned Mcp-Session-Id), state lives only
// in this process, nothing is written to the registry. Its tools answer like the reference node's:
// `counter` returns the session's next integer (from 1) as text, `whoami` returns
// {"node": <name>, "boot": <per-process boot id>} as compact JSON. `ask`, `sample` and `progress`
// send an elicitation, a sampling request and progress notifications to the client in the middle
// of the call, on the call's own SSE stream: what the edge must route back to this process.
// GET /healthz answers 200 once the server listens.
//
//	go build -o mcp-go-server . && ./mcp-go-server --port 7201 --name go-a
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var boot = newBoot()

func newBoot() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Progress steps of the `progress` tool: 3 notifications 400 ms apart, 1.2 s in all.
const (
	progressSteps = 3
	progressEvery = 400 * time.Millisecond
)

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

// counters holds one integer per session: a misroute to another process shows as a counter reset.
type counters struct {
	mu sync.Mutex
	n  map[*mcp.ServerSession]int
}

func (c *counters) next(ss *mcp.ServerSession) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, known := c.n[ss]; !known {
		// Forget the session once it is closed (DELETE, idle, shutdown).
		go func() {
			_ = ss.Wait()
			c.mu.Lock()
			delete(c.n, ss)
			c.mu.Unlock()
		}()
	}
	c.n[ss]++
	return c.n[ss]
}

func build(name string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "go-mcp-test-server", Version: "0.1.0"}, nil)
	sessions := &counters{n: map[*mcp.ServerSession]int{}}
	type none struct{}

	mcp.AddTool(s, &mcp.Tool{Name: "counter", Description: "Increments this session's in-memory counter and returns it"},
		func(_ context.Context, req *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, any, error) {
			return text(strconv.Itoa(sessions.next(req.Session))), nil, nil
		})

	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "Node name and boot id of the process serving this session"},
		func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
			b, err := json.Marshal(struct {
				Node string `json:"node"`
				Boot string `json:"boot"`
			}{name, boot})
			return text(string(b)), nil, err
		})

	// The SDK relates a server-to-client message to the incoming call through the handler's ctx:
	// passing it puts the request (or notification) on the call's SSE stream, not the GET stream.
	mcp.AddTool(s, &mcp.Tool{Name: "ask", Description: "Asks the client for a name (elicitation) and greets it"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{
				Message: "What is your name?",
				RequestedSchema: map[string]any{
					"type":       "object",
					"properties": map[string]any{"name": map[string]any{"type": "string"}},
					"required":   []string{"name"},
				},
			})
			if err != nil {
				return nil, nil, err
			}
			if name, ok := res.Content["name"].(string); ok && res.Action == "accept" {
				return text("hello " + name), nil, nil
			}
			return text("declined"), nil, nil
		})

	mcp.AddTool(s, &mcp.Tool{Name: "sample", Description: "Asks the client's model to answer \"ping\" (sampling)"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, any, error) {
			//lint:ignore SA1019 deprecated only from protocol 2026-07-28; the clients under test speak older versions
			res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
				MaxTokens: 16,
				Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "ping"}}},
			})
			if err != nil {
				return nil, nil, err
			}
			reply, _ := res.Content.(*mcp.TextContent)
			if reply == nil {
				return nil, nil, fmt.Errorf("sampling answered %T, not text", res.Content)
			}
			return text("sampled: " + reply.Text), nil, nil
		})

	mcp.AddTool(s, &mcp.Tool{Name: "progress", Description: "Sends 3 progress notifications 400 ms apart (when given a progress token), then returns"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, any, error) {
			token := req.Params.GetProgressToken()
			for i := 1; i <= progressSteps; i++ {
				if token != nil {
					err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: token, Progress: float64(i), Total: progressSteps,
					})
					if err != nil {
						return nil, nil, err
					}
				}
				select {
				case <-time.After(progressEvery):
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
			}
			return text("done"), nil, nil
		})
	return s
}

func main() {
	port := flag.Int("port", 0, "port to listen on (required)")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	name := flag.String("name", "", "node name (default go-<port>)")
	flag.Parse()
	if *port <= 0 || *port >= 65536 {
		fmt.Fprintf(os.Stderr, "--port must be between 1 and 65535, got %d\n", *port)
		os.Exit(2)
	}
	if *name == "" {
		*name = fmt.Sprintf("go-%d", *port)
	}

	server := build(*name)
	mux := http.NewServeMux()
	// No Logger: the SDK would log session ids, which are secrets. Behind a proxy the Host header is
	// the proxy's: the SDK's DNS-rebinding check would refuse it.
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{DisableLocalhostProtection: true}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "up", "node": *name, "boot": boot})
	})

	// Longer keep-alive than Traefik's idle timeout for backend connections (90 s), as the reference node.
	srv := &http.Server{
		Addr:              net.JoinHostPort(*host, strconv.Itoa(*port)),
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		<-ctx.Done()
		// Open SSE streams never go idle: give calls in flight a moment, then close everything.
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(shutdown) != nil {
			_ = srv.Close()
		}
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "go MCP test server: %v\n", err)
		os.Exit(1)
	}
	<-closed
}
