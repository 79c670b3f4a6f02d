// Package integration holds the end-to-end tests of ami-bridge: they build
// the ami-bridge binary once, run it against an embedded NATS server and
// fake Asterisk PBXes (amitest) on random local ports, and check the NATS
// contract of the README through a NATS client and the real nats CLI.
//
// Run them with
//
//	go test -race -count=1 ./test/integration/
//
// The nats CLI (github.com/nats-io/natscli/nats@v0.5.0) must be on PATH or
// in $(go env GOPATH)/bin; .ci/run installs it.
package integration
