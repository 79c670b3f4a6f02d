package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/httpserver"
	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/metrics"
)

// opsListener is the HTTP listener of /metrics, /healthz and /readyz, or
// nil when http.listen is empty; its methods do nothing then.
type opsListener struct{ *httpserver.Server }

// startOps starts the listener of c, if any.
func startOps(c config.HTTP, log zerolog.Logger) (*opsListener, error) {
	if c.Addr == "" {
		return nil, nil
	}
	return listenOps(c.Addr, c.Ready == "all", log)
}

func listenOps(addr string, readyAll bool, log zerolog.Logger) (*opsListener, error) {
	s, err := httpserver.Start(httpserver.Options{Addr: addr, ReadyAll: readyAll}, log)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			err = fmt.Errorf("%w; set http.listen (--http-listen) to a free address", err)
		}
		return nil, err
	}
	log.Info().Str("metrics_url", s.URL()+"/metrics").Msg("http listener started")
	return &opsListener{s}, nil
}

// attach lets the endpoints read the bridge and its NATS connection.
func (o *opsListener) attach(b metrics.Bridge, nc metrics.Conn) {
	if o != nil {
		o.Attach(b, nc)
	}
}

// close stops the listener, last, so that probes and scrapes see the
// shutdown through.
func (o *opsListener) close(log zerolog.Logger) {
	if o == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.Close(ctx); err != nil {
		log.Warn().Err(err).Msg("http listener shutdown incomplete")
	}
}

// demoHTTPListen is where the demo serves /metrics unless told otherwise.
var demoHTTPListen = fmt.Sprintf("127.0.0.1:%d", config.DefaultHTTPPort)

// startDemoOps starts the demo's listener on addr; with anyPort, a taken
// addr gives way to a free port, so that two demos, or a demo beside a
// daemon, both run.
func startDemoOps(listen string, anyPort bool, log zerolog.Logger) (*opsListener, error) {
	addr, err := config.HTTPAddr(listen)
	if err != nil {
		return nil, err
	}
	o, err := listenOps(addr, true, log)
	if err != nil && anyPort && errors.Is(err, syscall.EADDRINUSE) {
		return listenOps("127.0.0.1:0", true, log)
	}
	return o, err
}
