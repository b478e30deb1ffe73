// Command vigil is the Vigil appliance: `vigil serve` runs the whole pipeline (ingest,
// log, rollups, query store, rules, alerting, HTTP API); `vigil rules check|test` are
// promtool-compatible; `vigil version` prints the build.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `Vigil: a monitoring and alerting pipeline appliance.

Usage:
  vigil serve [flags]            run everything (see vigil serve --help)
  vigil rules check FILE...      check rule files, as promtool check rules
  vigil rules test FILE...       run rule unit tests, as promtool test rules
  vigil version                  print the version
  vigil help                     print this help
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serveCommand(args[1:], stdout, stderr)
	case "rules":
		return rulesCommand(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "vigil %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vigil: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
