package amitest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
)

// Capture is one recorded AMI session of a live Asterisk (the captures in
// ../testdata/captures): what Asterisk sent, what the client sent, and the
// socket reads and writes that carried them.
type Capture struct {
	Recv   []byte  // NAME.recv.bin: every byte from Asterisk
	Sent   []byte  // NAME.sent.bin: every byte from the client (may be nil)
	Chunks []Chunk // NAME.chunks.jsonl (may be nil)
}

// Chunk is one line of a .chunks.jsonl: a socket read ("recv"), a write
// ("send"), or a "close" or "note" annotation.
type Chunk struct {
	T    float64 // seconds since connect
	Dir  string
	Data []byte
}

// LoadCapture reads a capture by its path with or without the
// ".recv.bin" suffix, such as ".../asterisk-22/01_login_logoff". The
// .sent.bin and .chunks.jsonl files are optional; when chunks are present
// their recv bytes must join to exactly the .recv.bin. A chunk line carries
// its bytes as "hex", or only their "len", which then slices them from the
// .recv.bin or .sent.bin in order.
func LoadCapture(path string) (*Capture, error) {
	base := strings.TrimSuffix(path, ".recv.bin")
	recv, err := os.ReadFile(base + ".recv.bin")
	if err != nil {
		return nil, fmt.Errorf("amitest: load capture: %w", err)
	}
	c := &Capture{Recv: recv}
	if c.Sent, err = os.ReadFile(base + ".sent.bin"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("amitest: load capture: %w", err)
	}
	f, err := os.Open(base + ".chunks.jsonl")
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("amitest: load capture: %w", err)
	}
	defer f.Close()
	if c.Chunks, err = parseChunks(f, recv, c.Sent); err != nil {
		return nil, fmt.Errorf("amitest: load capture %s.chunks.jsonl: %w", base, err)
	}
	if joined := bytes.Join(c.RecvChunks(), nil); !bytes.Equal(joined, recv) {
		return nil, fmt.Errorf("amitest: load capture %s: recv chunks (%d bytes) differ from .recv.bin (%d bytes)", base, len(joined), len(recv))
	}
	return c, nil
}

func parseChunks(r io.Reader, recv, sent []byte) ([]Chunk, error) {
	var out []Chunk
	rest := map[string][]byte{"recv": recv, "send": sent}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var rec struct {
			T   float64 `json:"t"`
			Dir string  `json:"dir"`
			Hex string  `json:"hex"`
			Len int     `json:"len"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		data, err := hex.DecodeString(rec.Hex)
		if err != nil {
			return nil, fmt.Errorf("line %d: hex: %w", line, err)
		}
		if rec.Hex == "" && rec.Len > 0 {
			src, ok := rest[rec.Dir]
			if !ok || len(src) < rec.Len {
				return nil, fmt.Errorf("line %d: %d %s bytes past the end of what the .recv.bin or .sent.bin holds", line, rec.Len, rec.Dir)
			}
			data, rest[rec.Dir] = src[:rec.Len], src[rec.Len:]
		}
		out = append(out, Chunk{T: rec.T, Dir: rec.Dir, Data: data})
	}
	return out, sc.Err()
}

// RecvChunks returns the bytes of each recorded socket read from Asterisk,
// in order: the TCP segmentation the client saw.
func (c *Capture) RecvChunks() [][]byte {
	var out [][]byte
	for _, ch := range c.Chunks {
		if ch.Dir == "recv" {
			out = append(out, ch.Data)
		}
	}
	return out
}

// ReplayOptions configures a replay server.
type ReplayOptions struct {
	// Addr is the listen address; "" means "127.0.0.1:0".
	Addr string
	// TLS, when set, serves the replay over TLS.
	TLS *tls.Config
	// Split, when set, cuts the bytes into pieces of these lengths, one
	// socket write each (a remainder goes last). ReplayCapture splits at
	// the recorded reads instead.
	Split []int
	// Interactive makes ReplayCapture follow the recorded interleaving:
	// before the bytes that Asterisk sent after the client's writes, it
	// waits until the client has sent as many messages (blank-line
	// terminated) as those writes held.
	Interactive bool
	// KeepOpen keeps each connection open after the last byte until the
	// client closes it; by default the server closes it, as Asterisk did
	// at the end of every capture.
	KeepOpen bool
}

// Replayer serves recorded bytes to every client that connects.
type Replayer struct {
	ln     net.Listener
	steps  []replayStep
	opts   ReplayOptions
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// replayStep writes data, or, when data is nil, waits until the client has
// sent waitFor messages in all.
type replayStep struct {
	data    []byte
	waitFor int
}

// Replay serves recv to each client that connects, in one write or in the
// pieces of opts.Split, then closes the connection.
func Replay(recv []byte, opts ReplayOptions) (*Replayer, error) {
	var steps []replayStep
	rest := recv
	for _, n := range opts.Split {
		if n <= 0 || len(rest) == 0 {
			continue
		}
		n = min(n, len(rest))
		steps = append(steps, replayStep{data: rest[:n]})
		rest = rest[n:]
	}
	if len(rest) > 0 {
		steps = append(steps, replayStep{data: rest})
	}
	return startReplay(steps, opts)
}

// ReplayCapture serves a capture's bytes from Asterisk to each client that
// connects, one socket write per recorded read, following the recorded
// client writes when opts.Interactive is set. Without chunks it is Replay
// of c.Recv.
func ReplayCapture(c *Capture, opts ReplayOptions) (*Replayer, error) {
	if len(c.Chunks) == 0 {
		return Replay(c.Recv, opts)
	}
	var steps []replayStep
	sent := 0
	var counter msgCounter
	for _, ch := range c.Chunks {
		switch ch.Dir {
		case "recv":
			steps = append(steps, replayStep{data: ch.Data})
		case "send":
			if !opts.Interactive {
				continue
			}
			sent += counter.feed(ch.Data)
			steps = append(steps, replayStep{waitFor: sent})
		}
	}
	return startReplay(steps, opts)
}

// StartReplay loads the capture at path (see LoadCapture) and serves it
// with ReplayCapture.
func StartReplay(path string, opts ReplayOptions) (*Replayer, error) {
	c, err := LoadCapture(path)
	if err != nil {
		return nil, err
	}
	return ReplayCapture(c, opts)
}

func startReplay(steps []replayStep, opts ReplayOptions) (*Replayer, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("amitest: replay listen: %w", err)
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
	}
	r := &Replayer{ln: ln, steps: steps, opts: opts, conns: map[net.Conn]struct{}{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// Addr returns the host:port the replay listens on.
func (r *Replayer) Addr() string { return r.ln.Addr().String() }

// Close stops listening, closes every connection and waits for them.
func (r *Replayer) Close() error {
	r.cancel()
	err := r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("amitest: replay close: %w", err)
	}
	return nil
}

func (r *Replayer) acceptLoop() {
	defer r.wg.Done()
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.ctx.Err() != nil {
			r.mu.Unlock()
			conn.Close()
			return
		}
		r.conns[conn] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(conn)
	}
}

func (r *Replayer) serve(conn net.Conn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, conn)
		r.mu.Unlock()
		conn.Close()
	}()
	// The client's bytes are read, counted in messages, and dropped, so
	// that its writes never block.
	var (
		mu       sync.Mutex
		received int
		changed  = make(chan struct{}, 1)
		readDone = make(chan struct{})
	)
	go func() {
		defer close(readDone)
		var counter msgCounter
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				mu.Lock()
				received += counter.feed(buf[:n])
				mu.Unlock()
				signal(changed)
			}
			if err != nil {
				return
			}
		}
	}()
	for _, st := range r.steps {
		if st.data == nil {
			for {
				mu.Lock()
				got := received
				mu.Unlock()
				if got >= st.waitFor {
					break
				}
				select {
				case <-changed:
				case <-readDone:
					return
				case <-r.ctx.Done():
					return
				}
			}
			continue
		}
		if _, err := conn.Write(st.data); err != nil {
			return
		}
	}
	if r.opts.KeepOpen {
		select {
		case <-readDone:
		case <-r.ctx.Done():
		}
	}
}

// msgCounter counts the blank lines, which end messages, in a byte
// stream fed in pieces.
type msgCounter struct {
	lineLen int // bytes on the current line, CR excluded
}

func (m *msgCounter) feed(b []byte) int {
	n := 0
	for _, c := range b {
		switch c {
		case '\n':
			if m.lineLen == 0 {
				n++
			}
			m.lineLen = 0
		case '\r':
		default:
			m.lineLen++
		}
	}
	return n
}
