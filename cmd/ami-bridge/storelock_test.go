package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// nats-server takes no lock: a second bridge on the same store_dir opened
// the first one's live stream files and rebuilt them under it.
func TestLockStore_OneHolderAtATime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	release, err := lockStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockStore(dir)
	if !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("second lock: %v, want ErrStoreInUse", err)
	}
	for _, want := range []string{dir, "process " + strconv.Itoa(os.Getpid()), "store_dir each"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	release()
	release2, err := lockStore(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	release2()
}
