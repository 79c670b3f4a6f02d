// Command ami-bridge puts every AMI event of one or many Asterisk PBXes on
// NATS and serves AMI actions by NATS request-reply.
//
// Usage:
//
//	ami-bridge [run] --config FILE [flags]   bridge the PBXes of FILE
//	ami-bridge demo [flags]                   a fake PBX, embedded NATS and a live feed
//	ami-bridge version                        print the version
//	ami-bridge help                           the commands and the flags of run
//
// Configuration comes from the YAML file, then AMI_BRIDGE_* environment
// variables ("__" nests: AMI_BRIDGE_NATS__URL), then flags; see
// config.example.yaml. Exit codes: 0 after a clean stop (SIGINT, SIGTERM),
// 1 when NATS or the bridge fails, 2 for bad flags or configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
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
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || args[0] == "--version" || args[0] == "--help" || args[0] == "-h") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runCommand(ctx, args, environ, stdout, stderr)
	case "demo":
		return demoCommand(ctx, args, environ, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "--help":
		usage(stdout)
		fmt.Fprint(stdout, "\nFlags of run:\n")
		fs := pflag.NewFlagSet("ami-bridge run", pflag.ContinueOnError)
		config.AddFlags(fs)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
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
  ami-bridge help                           this text

"ami-bridge run --help" and "ami-bridge demo --help" list the flags.
`)
}

// parseFlags parses a command's flags. pflag's ContinueOnError prints
// nothing for a bad flag, so parseFlags prints the error and the
// command's usage; for --help pflag has printed the usage already. It
// returns false, with the exit code, when the command must not go on.
func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, true
	case errors.Is(err, pflag.ErrHelp):
		return exitOK, false
	}
	fmt.Fprintf(stderr, "%s: %v\n\n", fs.Name(), err)
	fs.Usage()
	return exitUsage, false
}

// hasServers reports whether a PBX can be configured at all: servers come
// only from --config FILE or AMI_BRIDGE_SERVERS. Without either it says
// so, rather than the config's "at least one PBX is required".
func hasServers(fs *pflag.FlagSet, environ []string, stderr io.Writer) bool {
	if path, _ := fs.GetString("config"); path != "" {
		return true
	}
	for _, kv := range environ {
		if strings.HasPrefix(kv, config.ServersEnv+"=") {
			return true
		}
	}
	fmt.Fprintf(stderr, "ami-bridge: no --config FILE given (nor %s): see config.example.yaml, or try \"ami-bridge demo\"\n\n", config.ServersEnv)
	fs.Usage()
	return false
}
