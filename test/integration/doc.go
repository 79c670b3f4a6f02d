// Package integration holds the end-to-end tests of ami-bridge: they build
// the ami-bridge binary once, run it against an embedded NATS server and
// fake Asterisk PBXes (amitest) on random local ports, and check the NATS
// contract of docs/contract.md through a NATS client and the real nats CLI.
//
// Run them with
//
//	go test -race -count=1 ./test/integration/
//
// Each test builds a world (harness_test.go): its own NATS server, a client
// collecting every status and event (harness_inbox_test.go), amitest
// PBXes, and the bridge process with its YAML file and captured log
// (harness_process_test.go). Replies are read by harness_reply_test.go,
// JetStream streams by harness_stream_test.go; the chaos tests' servers,
// load and WAN link are in harness_chaos_test.go. The harness_* files hold
// no test. At the end of every test the process
// must exit 0 on SIGTERM, and no secret of the world may appear in its
// log, in a reply or in a status.
//
// The nats CLI (github.com/nats-io/natscli/nats@v0.5.0) must be on PATH or
// in $(go env GOPATH)/bin; .ci/run installs it.
package integration
