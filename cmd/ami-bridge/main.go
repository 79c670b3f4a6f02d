// Command ami-bridge puts every AMI event of one or many Asterisk PBXes on
// NATS and serves AMI actions by NATS request-reply.
//
// Usage:
//
//	ami-bridge [run] --config FILE [flags]   bridge the PBXes of FILE
//	ami-bridge demo [flags]                   a fake PBX, embedded NATS and a live feed
//	ami-bridge version                        print the version
//
// Configuration comes from the YAML file, then AMI_BRIDGE_* environment
// variables ("__" nests: AMI_BRIDGE_NATS__URL), then flags; see
// config.example.yaml. Exit codes: 0 after a clean stop (SIGINT, SIGTERM),
// 1 when NATS or the bridge fails, 2 for bad flags or configuration.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	os.Exit(mainCommand(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// mainCommand dispatches to the command named by args[0], "run" by default.
func mainCommand(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || args[0] == "--version") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runCommand(ctx, args, environ, stdout, stderr)
	case "demo":
		return demoCommand(ctx, args, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "ami-bridge: unknown command %q\n\n", cmd)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  ami-bridge [run] --config FILE [flags]   bridge the PBXes of FILE to NATS
  ami-bridge demo [flags]                   fake PBX + embedded NATS + live feed, no setup
  ami-bridge version                        print the version

"ami-bridge run --help" and "ami-bridge demo --help" list the flags.
`)
}
