package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// roleEnv names the role a process of this tool plays: unset for the
// orchestrator, "pbx", "sub" or "raw" for the children it starts. An
// environment variable rather than an argument, so that a test binary
// (see TestMain) can play the roles too.
const roleEnv = "AMILOAD_ROLE"

// child is a process of this tool started in a role. The orchestrator
// talks to it in JSON lines: one request on its stdin, one reply on its
// stdout. Its stderr goes to the orchestrator's.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	in    *json.Encoder
	out   *bufio.Scanner
}

// startChild starts this executable in role with args, and reads its first
// reply, which says it is ready, into ready.
func startChild(role string, ready any, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{name: role, cmd: cmd, stdin: stdin, in: json.NewEncoder(stdin), out: bufio.NewScanner(stdout)}
	c.out.Buffer(nil, 64<<20)
	if err := c.read(ready); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// call sends req and reads the reply into reply.
func (c *child) call(req, reply any) error {
	if err := c.in.Encode(req); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return c.read(reply)
}

func (c *child) read(reply any) error {
	if !c.out.Scan() {
		return fmt.Errorf("%s: exited: %v", c.name, errors.Join(c.out.Err(), io.ErrUnexpectedEOF))
	}
	var r struct {
		Error string          `json:"error"`
		Reply json.RawMessage `json:"reply"`
	}
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		return fmt.Errorf("%s: bad reply %q: %w", c.name, c.out.Bytes(), err)
	}
	if r.Error != "" {
		return fmt.Errorf("%s: %s", c.name, r.Error)
	}
	if reply == nil {
		return nil
	}
	return json.Unmarshal(r.Reply, reply)
}

// stop ends the child: closing its stdin asks it to exit, a kill follows
// after a while. It returns how the child exited.
func (c *child) stop() error {
	if c == nil {
		return nil
	}
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		c.cmd.Process.Signal(syscall.SIGKILL)
		return fmt.Errorf("%s: killed after 10 s: %w", c.name, <-done)
	}
}

// serve is a child's side: it replies to every request line on stdin with
// handle's result, until stdin closes.
func serve(ready any, handle func(req json.RawMessage) (any, error)) error {
	out := json.NewEncoder(os.Stdout)
	send := func(v any, err error) error {
		if err != nil {
			return out.Encode(map[string]string{"error": err.Error()})
		}
		return out.Encode(map[string]any{"reply": v})
	}
	if err := send(ready, nil); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(nil, 1<<20)
	for in.Scan() {
		if err := send(handle(in.Bytes())); err != nil {
			return err
		}
	}
	return in.Err()
}
