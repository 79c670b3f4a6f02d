package config

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/ami-bridge/ami-bridge/amiproto"
	yamlv3 "go.yaml.in/yaml/v3"
)

// repoRoot is the repository root, from this package's directory.
const repoRoot = "../../../.."

// composeService is what the test reads of a docker-compose.yml service.
type composeService struct {
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
}

// composeVar is a ${NAME}, ${NAME:-default} or ${NAME:?message}
// reference of docker compose.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}`)

// interpolate resolves compose references as compose does for a user who
// set only the required (":?") variables, which get "set-"+NAME.
func interpolate(s string) (string, []string) {
	var required []string
	out := composeVar.ReplaceAllStringFunc(s, func(ref string) string {
		m := composeVar.FindStringSubmatch(ref)
		switch m[2] {
		case "-":
			return m[3]
		case "?":
			required = append(required, m[1])
		}
		return "set-" + m[1]
	})
	return out, required
}

// TestComposeConfig loads the config docker-compose.yml tells users to
// copy (config.compose.yaml) with the real loader and the environment
// compose gives the container, and checks that the two agree: every
// secret_env is passed, no PBX is on the container's own loopback, the
// mounted file is the one the command reads. No Docker engine needed.
func TestComposeConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yamlv3.Unmarshal(data, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	svc, ok := compose.Services["ami-bridge"]
	if !ok {
		t.Fatal("docker-compose.yml has no ami-bridge service")
	}
	if _, ok := compose.Services["nats"]; !ok {
		t.Fatal("docker-compose.yml has no nats service")
	}

	// The comment's recipe: cp config.compose.yaml config.yaml.
	if !strings.Contains(string(data), "cp config.compose.yaml config.yaml") {
		t.Error("docker-compose.yml does not say to copy config.compose.yaml")
	}

	var environ, required []string
	for k, v := range svc.Environment {
		val, req := interpolate(v)
		environ = append(environ, k+"="+val)
		required = append(required, req...)
	}
	if u := environValue(environ, "AMI_BRIDGE_NATS__URL"); u != "nats://nats:4222" {
		t.Errorf("AMI_BRIDGE_NATS__URL = %q, want the nats service", u)
	}

	// The mounted config is the file the command reads.
	i := slices.Index(svc.Command, "--config")
	if i < 0 || i+1 >= len(svc.Command) {
		t.Fatalf("command %q has no --config FILE", svc.Command)
	}
	mounted := false
	for _, v := range svc.Volumes {
		v, _ = interpolate(v)
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == svc.Command[i+1] {
			mounted = parts[0] == "./config.yaml"
		}
	}
	if !mounted {
		t.Errorf("volumes %q do not mount ./config.yaml at %s", svc.Volumes, svc.Command[i+1])
	}

	fs := pflag.NewFlagSet("compose", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--config", filepath.Join(repoRoot, "config.compose.yaml")}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(fs, environ)
	if err != nil {
		t.Fatalf("config.compose.yaml with compose's environment %q: %v", environ, err)
	}
	if !cfg.JetStream.Enabled || cfg.NATS.URL != "nats://nats:4222" {
		t.Errorf("jetstream %v, nats.url %q: the compose environment did not apply", cfg.JetStream.Enabled, cfg.NATS.URL)
	}
	for _, s := range cfg.Servers {
		ep, err := amiproto.ParseURL(s.Endpoint)
		if err != nil {
			t.Fatalf("server %s endpoint %q: %v", s.Name, s.Endpoint, err)
		}
		host, _, err := net.SplitHostPort(ep.Addr)
		if err != nil {
			t.Fatalf("server %s endpoint %q: %v", s.Name, s.Endpoint, err)
		}
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			t.Errorf("server %s is on %s: in the container that is the container itself", s.Name, host)
		}
		if s.SecretEnv != "" && !slices.Contains(required, s.SecretEnv) {
			t.Errorf("server %s takes secret_env %s, which compose does not require from the user", s.Name, s.SecretEnv)
		}
	}
}

func environValue(environ []string, name string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// TestDockerfile checks what "docker build" needs without a Docker
// engine: the Go image is at least go.mod's Go, the files it copies exist
// and .dockerignore keeps them, the -X flag names the variable version.go
// declares, and the default command reads the file docker-compose.yml
// mounts.
func TestDockerfile(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(repoRoot, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	docker, gomod, ignore := read("Dockerfile"), read("go.mod"), read(".dockerignore")

	image := regexp.MustCompile(`(?m)^FROM golang:(\d+)\.(\d+)`).FindStringSubmatch(docker)
	need := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindStringSubmatch(gomod)
	if image == nil || need == nil {
		t.Fatalf("no golang image (%v) or go directive (%v)", image, need)
	}
	if atoi(t, image[1]) < atoi(t, need[1]) || image[1] == need[1] && atoi(t, image[2]) < atoi(t, need[2]) {
		t.Errorf("Dockerfile builds with golang:%s.%s, go.mod needs Go %s.%s", image[1], image[2], need[1], need[2])
	}

	for _, m := range regexp.MustCompile(`(?m)^COPY (go\.mod go\.sum) \./`).FindAllStringSubmatch(docker, -1) {
		for _, f := range strings.Fields(m[1]) {
			if _, err := os.Stat(filepath.Join(repoRoot, f)); err != nil {
				t.Errorf("Dockerfile copies %s: %v", f, err)
			}
		}
	}
	for _, line := range strings.Split(ignore, "\n") {
		line = strings.TrimSpace(line)
		for _, kept := range []string{"go.mod", "go.sum", "cmd", "amiproto", "bridge", "subjects"} {
			if ok, _ := filepath.Match(strings.TrimSuffix(line, "/"), kept); ok {
				t.Errorf(".dockerignore line %q drops %s, which the build needs", line, kept)
			}
		}
	}
	if !strings.Contains(docker, "-X main.version=${VERSION}") || !strings.Contains(docker, "ARG VERSION") {
		t.Error("Dockerfile does not set main.version from the VERSION argument")
	}
	if !strings.Contains(read("cmd/ami-bridge/version.go"), "\nvar version string\n") {
		t.Error("cmd/ami-bridge/version.go has no package-level var version string for -X main.version")
	}
	if !strings.Contains(docker, `CMD ["run", "--config", "/etc/ami-bridge/config.yaml"]`) ||
		!strings.Contains(read("docker-compose.yml"), `command: ["run", "--config", "/etc/ami-bridge/config.yaml"]`) {
		t.Error("the Dockerfile's CMD and docker-compose.yml's command do not both read /etc/ami-bridge/config.yaml")
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
