package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrStoreInUse is returned when another process holds the embedded
// server's JetStream store.
var ErrStoreInUse = errors.New("in use by another process")

// defaultStoreDir is where the embedded server keeps JetStream when
// nats.embedded.store_dir is empty: where nats-server itself would put it
// (<tmp>/nats/jetstream), named here so that it can be locked.
func defaultStoreDir() string { return filepath.Join(os.TempDir(), "nats") }

// storeLockFile is the file, in the store directory, whose lock says a
// process has the store open.
const storeLockFile = "ami-bridge.lock"

// lockStore takes an exclusive lock on dir for this process. nats-server
// takes none: a second server on the same directory opens the first
// one's live stream files and rebuilds them under it. The lock is an
// flock, so the kernel releases it when the process ends, however it
// ends; the returned function releases it earlier, once the server has
// stopped.
func lockStore(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("nats.embedded.store_dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, storeLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("nats.embedded.store_dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			if pid := string(bytes.TrimSpace(holder)); pid != "" {
				who = "process " + pid
			}
			return nil, fmt.Errorf("nats.embedded.store_dir %s: %w (%s holds it): two bridges on one host need a store_dir each (--store-dir)", dir, ErrStoreInUse, who)
		}
		return nil, fmt.Errorf("nats.embedded.store_dir %s: lock: %w", dir, err)
	}
	// The pid only names the holder in the error above; the lock is what
	// counts, so a stale pid of a dead process is harmless.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
