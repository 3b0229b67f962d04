module mcp-affinity/test/conformance

go 1.22

require (
	github.com/http-wasm/http-wasm-host-go v0.7.0
	github.com/tetratelabs/wazero v1.8.0
)
